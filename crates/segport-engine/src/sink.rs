//! The sink stage: one output batch's rows, buffered and encoded as Parquet, from either row
//! builder (JSON values, or columns built straight from the fragments).

use std::collections::BTreeMap;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use segport_store::ingest::output_writer_properties_for;
use serde_json::Value;

use crate::columnar::{self, ColumnarRow};
use crate::error::EngineError;
use crate::project::Selection;

/// Buffers output rows of one batch and encodes them as Parquet.
pub(crate) struct Sink {
    schema: SchemaRef,
    /// The selections the columnar rows are built by: the profile's, and its events'.
    profile: Selection,
    events: Option<Selection>,
    rows: Vec<Value>,
    /// Rows of profiles with fragments, built column by column without JSON.
    columnar: Vec<ColumnarRow>,
    writer: Option<ArrowWriter<Vec<u8>>>,
    count: u64,
    pub(crate) by_namespace: BTreeMap<String, u64>,
}

/// What a sink wrote: its encoded file with its row count (`None` when it got no row), and its
/// rows by identity namespace.
pub(crate) struct SinkOutput {
    pub file: Option<(Bytes, u64)>,
    pub by_namespace: BTreeMap<String, u64>,
}

const SINK_ROWS: usize = 4096;

impl Sink {
    pub(crate) fn new(schema: SchemaRef, profile: Selection, events: Option<Selection>) -> Self {
        Self {
            schema,
            profile,
            events,
            rows: Vec::new(),
            columnar: Vec::new(),
            writer: None,
            count: 0,
            by_namespace: BTreeMap::new(),
        }
    }

    /// Adds a row built as JSON.
    pub(crate) fn push(&mut self, row: Value) -> Result<(), EngineError> {
        self.rows.push(row);
        self.count += 1;
        if self.rows.len() >= SINK_ROWS {
            let batch = encode_rows(&self.schema, &self.rows)?;
            self.rows.clear();
            self.write(&batch)?;
        }
        Ok(())
    }

    /// Adds a row to be built column by column.
    pub(crate) fn push_columnar(&mut self, row: ColumnarRow) -> Result<(), EngineError> {
        self.columnar.push(row);
        self.count += 1;
        if self.columnar.len() >= SINK_ROWS {
            self.flush_columnar()?;
        }
        Ok(())
    }

    fn flush_columnar(&mut self) -> Result<(), EngineError> {
        if self.columnar.is_empty() {
            return Ok(());
        }
        // Identities are merged here, once per batch, for the output and the namespace counts.
        let identities = columnar::RowIdentities::of_profiles(&self.columnar);
        identities.count_namespaces(&mut self.by_namespace);
        let batch = columnar::encode(
            &self.schema,
            &self.profile,
            self.events.as_ref(),
            &self.columnar,
            &identities,
        )?;
        self.columnar.clear();
        self.write(&batch)
    }

    fn flush(&mut self) -> Result<(), EngineError> {
        self.flush_columnar()?;
        if self.rows.is_empty() {
            return Ok(());
        }
        let batch = encode_rows(&self.schema, &self.rows)?;
        self.rows.clear();
        self.write(&batch)
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<(), EngineError> {
        if self.writer.is_none() {
            self.writer = Some(
                ArrowWriter::try_new(
                    Vec::new(),
                    self.schema.clone(),
                    Some(output_writer_properties_for(64 * 1024, batch)),
                )
                .map_err(EngineError::output)?,
            );
        }
        if let Some(w) = self.writer.as_mut() {
            w.write(batch).map_err(EngineError::output)?;
        }
        Ok(())
    }

    /// Encodes what is buffered and closes the file.
    pub(crate) fn finish(mut self) -> Result<SinkOutput, EngineError> {
        self.flush()?;
        let file = match self.writer {
            None => None,
            Some(w) => {
                Some((Bytes::from(w.into_inner().map_err(EngineError::output)?), self.count))
            }
        };
        Ok(SinkOutput { file, by_namespace: self.by_namespace })
    }
}

/// An output file without rows (its schema alone), encoded as every output file is: a batch
/// that got no row still holds one file.
/// The first `limit` rows of an encoded output file, as JSON (maps as objects).
pub fn output_rows(file: &Bytes, limit: usize) -> Result<Vec<Value>, EngineError> {
    let reader =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file.clone())
            .map_err(EngineError::output)?
            .with_batch_size(limit.clamp(1, 8192))
            .with_limit(limit)
            .build()
            .map_err(EngineError::output)?;
    let mut writer = arrow::json::ArrayWriter::new(Vec::new());
    for batch in reader {
        writer.write(&batch.map_err(EngineError::output)?).map_err(EngineError::output)?;
    }
    writer.finish().map_err(EngineError::output)?;
    let text = writer.into_inner();
    if text.is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_slice(&text).map_err(EngineError::output)
}

pub fn empty_output(schema: &SchemaRef) -> Result<Bytes, EngineError> {
    let mut sink = Sink::new(schema.clone(), Selection::default(), None);
    sink.write(&RecordBatch::new_empty(schema.clone()))?;
    Ok(sink.finish()?.file.map(|(bytes, _)| bytes).unwrap_or_default())
}

/// JSON rows as a record batch of `schema`.
pub fn encode_rows(schema: &SchemaRef, rows: &[Value]) -> Result<RecordBatch, EngineError> {
    let mut decoder = arrow::json::ReaderBuilder::new(schema.clone())
        .with_batch_size(rows.len().max(1))
        .build_decoder()
        .map_err(EngineError::output)?;
    decoder.serialize(rows).map_err(EngineError::output)?;
    match decoder.flush().map_err(EngineError::output)? {
        Some(b) => Ok(b),
        None => Ok(RecordBatch::new_empty(schema.clone())),
    }
}
