//! Schema evolution on read: every file was written with the union schema of its time, so
//! readers align its batches to today's union (missing fields become null, integers widen to
//! floats, structs and lists are aligned member by member).

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{new_null_array, Array, ArrayRef, AsArray, ListArray, RecordBatch, StructArray};
use arrow::datatypes::{DataType, Fields, SchemaRef};

use crate::{Result, StoreError};

/// Finds fields by name: a search for a few, a hash map for many. A wide union schema has
/// thousands of fields, where one search per target field would be quadratic.
pub struct ByName<'a> {
    fields: &'a Fields,
    map: Option<HashMap<&'a str, usize>>,
}

/// Up to this many fields, a linear search beats building a map.
const SEARCHED: usize = 32;

impl<'a> ByName<'a> {
    pub fn new(fields: &'a Fields) -> Self {
        let map = (fields.len() > SEARCHED)
            .then(|| fields.iter().enumerate().map(|(i, f)| (f.name().as_str(), i)).collect());
        Self { fields, map }
    }

    /// The position of the field called `name`.
    pub fn index(&self, name: &str) -> Option<usize> {
        match &self.map {
            Some(map) => map.get(name).copied(),
            None => self.fields.iter().position(|f| f.name() == name),
        }
    }
}

/// `array` as `target`, or an error when the types cannot meet (the union schema's type rules
/// make that a corrupt store, not bad input).
pub fn align_array(array: &ArrayRef, target: &DataType) -> Result<ArrayRef> {
    let source = array.data_type();
    if source == target {
        return Ok(array.clone());
    }
    match (source, target) {
        (DataType::Null, _) => Ok(new_null_array(target, array.len())),
        (DataType::Struct(_), DataType::Struct(target_fields)) => {
            let s = array.as_struct();
            let by_name = ByName::new(s.fields());
            let children = target_fields
                .iter()
                .map(|f| match by_name.index(f.name()) {
                    Some(i) => align_array(s.column(i), f.data_type()),
                    None => Ok(new_null_array(f.data_type(), s.len())),
                })
                .collect::<Result<Vec<_>>>()?;
            let aligned = StructArray::try_new(target_fields.clone(), children, s.nulls().cloned())
                .map_err(StoreError::arrow("aligning a struct"))?;
            Ok(Arc::new(aligned))
        }
        (DataType::List(_), DataType::List(target_item)) => {
            let l = array.as_list::<i32>();
            let values = align_array(l.values(), target_item.data_type())?;
            let aligned = ListArray::try_new(
                target_item.clone(),
                l.offsets().clone(),
                values,
                l.nulls().cloned(),
            )
            .map_err(StoreError::arrow("aligning a list"))?;
            Ok(Arc::new(aligned))
        }
        // Row files ([`crate::rowfile`]) keep dictionary columns as their plain values.
        (DataType::Utf8, DataType::Dictionary(_, value)) if **value == DataType::Utf8 => {
            arrow::compute::cast(array, target).map_err(StoreError::arrow("encoding a dictionary"))
        }
        (DataType::Dictionary(_, value), _) if **value == *target => {
            arrow::compute::cast(array, target).map_err(StoreError::arrow("decoding a dictionary"))
        }
        (DataType::Int64, DataType::Float64) => {
            arrow::compute::cast(array, target).map_err(StoreError::arrow("widening to float"))
        }
        _ => Err(StoreError::Schema(format!("cannot read a {source} column as {target}"))),
    }
}

/// `batch` with exactly the columns of `target`, in its order.
pub fn align_batch(batch: &RecordBatch, target: &SchemaRef) -> Result<RecordBatch> {
    if batch.schema() == *target {
        return Ok(batch.clone());
    }
    let schema = batch.schema();
    let by_name = ByName::new(schema.fields());
    let columns = target
        .fields()
        .iter()
        .map(|f| match by_name.index(f.name()) {
            Some(i) => align_array(batch.column(i), f.data_type()),
            None => Ok(new_null_array(f.data_type(), batch.num_rows())),
        })
        .collect::<Result<Vec<_>>>()?;
    RecordBatch::try_new_with_options(
        target.clone(),
        columns,
        &arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )
    .map_err(StoreError::arrow("aligning a batch"))
}

/// `batch` without what holds no value: attribute columns (the store's own, named `__…`,
/// stay) and struct members that are null in every row. Store files keep only what their
/// records had; readers align them to the union (missing is null).
pub fn prune_nulls(batch: &RecordBatch) -> Result<RecordBatch> {
    let schema = batch.schema();
    let mut fields = Vec::with_capacity(batch.num_columns());
    let mut columns = Vec::with_capacity(batch.num_columns());
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        if field.name().starts_with("__") {
            fields.push(field.clone());
            columns.push(column.clone());
        } else if let Some(kept) = prune_array(column)? {
            fields.push(Arc::new(field.as_ref().clone().with_data_type(kept.data_type().clone())));
            columns.push(kept);
        }
    }
    RecordBatch::try_new_with_options(
        Arc::new(arrow::datatypes::Schema::new_with_metadata(fields, schema.metadata().clone())),
        columns,
        &arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )
    .map_err(StoreError::arrow("leaving out null columns"))
}

/// `array` without its struct members that are null throughout; `None` when nothing is left.
fn prune_array(array: &ArrayRef) -> Result<Option<ArrayRef>> {
    if array.null_count() == array.len() {
        return Ok(None);
    }
    let DataType::Struct(members) = array.data_type() else { return Ok(Some(array.clone())) };
    let s = array.as_struct();
    let mut fields = Vec::with_capacity(members.len());
    let mut children = Vec::with_capacity(members.len());
    for (field, child) in members.iter().zip(s.columns()) {
        if let Some(kept) = prune_array(child)? {
            fields.push(Arc::new(field.as_ref().clone().with_data_type(kept.data_type().clone())));
            children.push(kept);
        }
    }
    if fields.len() == members.len() {
        return Ok(Some(array.clone()));
    }
    if fields.is_empty() {
        // Valid rows with no member set: the objects held nothing (ingest drops such objects,
        // so this does not happen; a struct needs a member to be stored).
        return Ok(None);
    }
    let pruned = StructArray::try_new(Fields::from(fields), children, s.nulls().cloned())
        .map_err(StoreError::arrow("leaving out null members"))?;
    Ok(Some(Arc::new(pruned)))
}

#[cfg(test)]
mod tests {
    use arrow::array::{Float64Array, Int64Array};
    use arrow::datatypes::{Field, Fields, Schema};

    use super::*;

    #[test]
    fn widens_and_fills_missing_struct_members() {
        let points: ArrayRef = Arc::new(Int64Array::from(vec![Some(1), None]));
        let old = StructArray::try_new(
            Fields::from(vec![Field::new("points", DataType::Int64, true)]),
            vec![points],
            None,
        )
        .unwrap();
        let target = DataType::Struct(Fields::from(vec![
            Field::new("points", DataType::Float64, true),
            Field::new("tier", DataType::Utf8, true),
        ]));
        let aligned = align_array(&(Arc::new(old) as ArrayRef), &target).unwrap();
        let s = aligned.as_struct();
        let p = s.column(0).as_any().downcast_ref::<Float64Array>().unwrap();
        assert_eq!(p.value(0), 1.0);
        assert!(p.is_null(1));
        assert_eq!(s.column(1).null_count(), 2);

        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, true)])),
            vec![Arc::new(Int64Array::from(vec![1]))],
        )
        .unwrap();
        let target = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Float64, true),
            Field::new("b", DataType::Utf8, true),
        ]));
        let out = align_batch(&batch, &target).unwrap();
        assert_eq!(out.schema(), target);
        assert!(align_array(batch.column(0), &DataType::Utf8).is_err());
    }
}
