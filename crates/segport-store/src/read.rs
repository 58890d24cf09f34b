//! Reading store files back: the batches of one file, aligned to a target schema.

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use object_store::path::Path;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::align::align_batch;
use crate::{Result, Storage, StoreError};

/// Every batch of the file at `path`, aligned to `schema` when one is given.
pub async fn read_file(
    storage: &Storage,
    path: &str,
    schema: Option<&SchemaRef>,
) -> Result<Vec<RecordBatch>> {
    let location = Path::from(path);
    let bytes = storage.get(&location).await?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .and_then(|b| b.build())
        .map_err(StoreError::parquet(&location))?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.map_err(StoreError::arrow("reading a store file"))?;
        out.push(match schema {
            Some(s) => align_batch(&batch, s)?,
            None => batch,
        });
    }
    Ok(out)
}

/// The number of row groups of a store file (tests use it to check file shapes).
pub async fn row_groups(storage: &Storage, path: &str) -> Result<usize> {
    let location = Path::from(path);
    let bytes = storage.get(&location).await?;
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(StoreError::parquet(&location))?;
    Ok(builder.metadata().num_row_groups())
}
