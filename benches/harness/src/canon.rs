//! Content digests of Parquet output that two engines can agree on: each row becomes canonical
//! JSON (object keys sorted, nulls left out, numbers without a type, timestamps as epoch
//! milliseconds, lists sorted except `timeSeriesEvents`, whose order the contract fixes), is
//! hashed, and the hashes are summed, so neither row order nor file split nor the engines'
//! choice among equivalent Arrow types changes the digest, while any difference in content does.

use std::path::Path;

use anyhow::Context;
use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, TimeUnit};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use rayon::prelude::*;
use serde_json::{Map, Value};

/// Rows and the order-independent sum of their hashes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Digest {
    pub rows: u64,
    pub hash: u64,
}

impl Digest {
    pub fn add(&mut self, other: Digest) {
        self.rows += other.rows;
        self.hash = self.hash.wrapping_add(other.hash);
    }
}

/// The digest of every row of the Parquet files `paths`, their row groups digested in
/// parallel (a full export at 10M profiles is gigabytes of output, digested once per run).
pub fn digest_files(paths: &[impl AsRef<Path> + Sync]) -> anyhow::Result<Digest> {
    let mut groups = Vec::new();
    for path in paths {
        let path = path.as_ref();
        let file =
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let metadata = ParquetRecordBatchReaderBuilder::try_new(file)
            .with_context(|| format!("cannot read {}", path.display()))?;
        groups.extend((0..metadata.metadata().num_row_groups()).map(|g| (path, g)));
    }
    groups.par_iter().map(|(path, group)| digest_row_group(path, *group)).try_reduce(
        Digest::default,
        |mut a, b| {
            a.add(b);
            Ok(a)
        },
    )
}

/// The digest of the rows of row group `group` of the Parquet file at `path`.
fn digest_row_group(path: &Path, group: usize) -> anyhow::Result<Digest> {
    let mut digest = Digest::default();
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.with_row_groups(vec![group]).build())
        .with_context(|| format!("cannot read {}", path.display()))?;
    for batch in reader {
        let batch = batch.with_context(|| format!("cannot read {}", path.display()))?;
        let schema = batch.schema();
        for row in 0..batch.num_rows() {
            let mut object = Vec::new();
            for (field, column) in schema.fields().iter().zip(batch.columns()) {
                if let Some(v) = value(column, row, field.name() == "timeSeriesEvents") {
                    object.push((field.name().clone(), v));
                }
            }
            let text = serde_json::to_string(&sorted_object(object))?;
            digest.add(Digest { rows: 1, hash: xxhash_rust::xxh3::xxh3_64(text.as_bytes()) });
        }
    }
    Ok(digest)
}

fn sorted_object(mut members: Vec<(String, Value)>) -> Value {
    members.sort_by(|a, b| a.0.cmp(&b.0));
    Value::Object(members.into_iter().collect::<Map<_, _>>())
}

fn number(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 9.0e15 {
        Value::from(x as i64)
    } else {
        Value::from(x)
    }
}

/// Row `i` of `array` as canonical JSON; `None` for null.
fn value(array: &ArrayRef, i: usize, ordered: bool) -> Option<Value> {
    if array.is_null(i) {
        return None;
    }
    Some(match array.data_type() {
        DataType::Boolean => Value::from(array.as_boolean().value(i)),
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => {
            let cast = arrow::compute::cast(&array.slice(i, 1), &DataType::Int64).ok()?;
            Value::from(cast.as_primitive::<arrow::datatypes::Int64Type>().value(0))
        }
        DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64 => {
            let cast = arrow::compute::cast(&array.slice(i, 1), &DataType::UInt64).ok()?;
            Value::from(cast.as_primitive::<arrow::datatypes::UInt64Type>().value(0))
        }
        DataType::Float32 | DataType::Float64 => {
            let cast = arrow::compute::cast(&array.slice(i, 1), &DataType::Float64).ok()?;
            number(cast.as_primitive::<arrow::datatypes::Float64Type>().value(0))
        }
        DataType::Decimal128(_, _) | DataType::Decimal256(_, _) => {
            let cast = arrow::compute::cast(&array.slice(i, 1), &DataType::Float64).ok()?;
            number(cast.as_primitive::<arrow::datatypes::Float64Type>().value(0))
        }
        DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64 => {
            let target = DataType::Timestamp(TimeUnit::Millisecond, None);
            let cast = arrow::compute::cast(&array.slice(i, 1), &target).ok()?;
            Value::from(cast.as_primitive::<arrow::datatypes::TimestampMillisecondType>().value(0))
        }
        DataType::Utf8 => Value::from(array.as_string::<i32>().value(i)),
        DataType::LargeUtf8 => Value::from(array.as_string::<i64>().value(i)),
        DataType::Utf8View => Value::from(array.as_string_view().value(i)),
        DataType::Dictionary(_, _) => {
            let dict = array.as_any_dictionary();
            let key = dict.normalized_keys()[i];
            return value(dict.values(), key, ordered);
        }
        DataType::Struct(fields) => {
            let s = array.as_struct();
            sorted_object(
                fields
                    .iter()
                    .zip(s.columns())
                    .filter_map(|(f, c)| {
                        value(c, i, f.name() == "timeSeriesEvents").map(|v| (f.name().clone(), v))
                    })
                    .collect(),
            )
        }
        DataType::List(_) => list(array.as_list::<i32>().value(i), ordered),
        DataType::LargeList(_) => list(array.as_list::<i64>().value(i), ordered),
        DataType::Map(_, _) => {
            let entries = array.as_map().value(i);
            let (keys, values) = (entries.column(0), entries.column(1));
            let members = (0..entries.len())
                .filter_map(|j| {
                    let key = match value(keys, j, false)? {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    value(values, j, false).map(|v| (key, v))
                })
                .collect();
            sorted_object(members)
        }
        other => Value::from(format!("<unsupported {other}>")),
    })
}

fn list(values: ArrayRef, ordered: bool) -> Value {
    let mut items: Vec<Value> =
        (0..values.len()).map(|j| value(&values, j, false).unwrap_or(Value::Null)).collect();
    if !ordered {
        items.sort_by_cached_key(|v| v.to_string());
    }
    Value::Array(items)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, ListArray, RecordBatch, StringArray, StructArray};
    use arrow::datatypes::{Field, Schema};
    use parquet::arrow::ArrowWriter;

    use super::*;

    fn write(path: &Path, batch: &RecordBatch) {
        let mut w =
            ArrowWriter::try_new(std::fs::File::create(path).unwrap(), batch.schema(), None)
                .unwrap();
        w.write(batch).unwrap();
        w.close().unwrap();
    }

    fn ids(rows: &[&[&str]]) -> ListArray {
        let mut builder = arrow::array::ListBuilder::new(arrow::array::StructBuilder::from_fields(
            vec![Field::new("id", DataType::Utf8, true)],
            0,
        ));
        for row in rows {
            for id in *row {
                let s = builder.values();
                s.field_builder::<arrow::array::StringBuilder>(0).unwrap().append_value(id);
                s.append(true);
            }
            builder.append(true);
        }
        builder.finish()
    }

    #[test]
    fn equal_content_in_other_shapes_agrees_and_other_content_does_not() {
        let dir = std::env::temp_dir().join(format!("segport-canon-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = RecordBatch::try_from_iter([
            ("n", Arc::new(Int64Array::from(vec![Some(1), None])) as ArrayRef),
            ("identities", Arc::new(ids(&[&["a", "b"], &["c"]])) as ArrayRef),
        ])
        .unwrap();
        // Columns and rows in another order, list items in another order, floats for ints.
        let b = RecordBatch::try_from_iter([
            ("identities", Arc::new(ids(&[&["c"], &["b", "a"]])) as ArrayRef),
            ("n", Arc::new(arrow::array::Float64Array::from(vec![None, Some(1.0)])) as ArrayRef),
        ])
        .unwrap();
        let c = RecordBatch::try_from_iter([
            ("n", Arc::new(Int64Array::from(vec![Some(1), None])) as ArrayRef),
            ("identities", Arc::new(ids(&[&["a", "b"], &["d"]])) as ArrayRef),
        ])
        .unwrap();
        for (name, batch) in [("a", &a), ("b", &b), ("c", &c)] {
            write(&dir.join(format!("{name}.parquet")), batch);
        }
        let d = |n: &str| digest_files(&[dir.join(format!("{n}.parquet"))]).unwrap();
        assert_eq!(d("a"), d("b"));
        assert_eq!(d("a").rows, 2);
        assert_ne!(d("a").hash, d("c").hash);
        // Event order is content.
        let events = |order: &[&str]| {
            let s = StructArray::from(vec![(
                Arc::new(Field::new("_id", DataType::Utf8, true)),
                Arc::new(StringArray::from(order.to_vec())) as ArrayRef,
            )]);
            let list = ListArray::new(
                Arc::new(Field::new("item", s.data_type().clone(), true)),
                arrow::buffer::OffsetBuffer::from_lengths([order.len()]),
                Arc::new(s),
                None,
            );
            let schema =
                Schema::new(vec![Field::new("timeSeriesEvents", list.data_type().clone(), true)]);
            RecordBatch::try_new(Arc::new(schema), vec![Arc::new(list)]).unwrap()
        };
        write(&dir.join("e1.parquet"), &events(&["x", "y"]));
        write(&dir.join("e2.parquet"), &events(&["y", "x"]));
        assert_ne!(d("e1"), d("e2"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
