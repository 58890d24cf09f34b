//! The columns a read needs, and the narrowing of read batches to the struct members a
//! projection reaches.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, ListArray, RecordBatch, StructArray};
use arrow::datatypes::{DataType, SchemaRef};
use parquet::arrow::ProjectionMask;
use parquet::schema::types::SchemaDescriptor;
use segport_store::columns::{IDENTITIES, SEGMENTS};
use segport_store::compact::fragment_schema;
use segport_store::schema::UnionSchema;
use segport_store::RecordKind;

use crate::project;

/// The columns a read needs: the fixed ones always, attributes as the projection needs them,
/// and the schema read batches are aligned to.
#[derive(Debug, Clone)]
pub struct ReadColumns {
    /// Top-level attribute fields to read; `None` reads all.
    attributes: Option<BTreeSet<String>>,
    /// Whether the memberships column is read: only when the output holds them (the segment
    /// filter was decided by the first pass).
    memberships: bool,
    /// Whether the identities column is read: always for profiles; for events only when their
    /// identities reach the output.
    identities: bool,
    /// The attribute leaves to read: `None` reads every leaf of the wanted fields.
    pub(crate) selection: Option<project::Selection>,
    pub(crate) schema: SchemaRef,
}

impl ReadColumns {
    pub(crate) fn new(
        kind: RecordKind,
        schema: &UnionSchema,
        selection: Option<&project::Selection>,
        identities: bool,
    ) -> Self {
        let attributes = selection.filter(|s| !s.all).map(|s| {
            let mut names: BTreeSet<String> =
                s.children.keys().filter(|k| schema.fields.contains_key(*k)).cloned().collect();
            if kind == RecordKind::Event {
                // Events are deduplicated by `_id` and ordered by `timestamp`.
                names.extend(["_id".to_owned(), "timestamp".to_owned()]);
            }
            names
        });
        let narrowed = match &attributes {
            None => schema.clone(),
            Some(names) => UnionSchema {
                fields: schema
                    .fields
                    .iter()
                    .filter(|(k, _)| names.contains(*k))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            },
        };
        let memberships =
            selection.is_none_or(|s| s.all || s.children.contains_key("segmentMembership"));
        let mut schema = fragment_schema(kind, &narrowed);
        // Columns not read are left out of the aligned batches rather than filled with nulls
        // (the store declares them non-nullable).
        let unread =
            |name: &str| (name == SEGMENTS && !memberships) || (name == IDENTITIES && !identities);
        if schema.fields().iter().any(|f| unread(f.name())) {
            let fields: Vec<_> =
                schema.fields().iter().filter(|f| !unread(f.name())).cloned().collect();
            schema = Arc::new(arrow::datatypes::Schema::new(fields));
        }
        let selection = selection.filter(|s| !s.all).map(|s| {
            let mut s = s.clone();
            if kind == RecordKind::Event {
                for name in ["_id", "timestamp"] {
                    s.children.entry(name.to_owned()).or_default().all = true;
                }
            }
            s
        });
        Self { attributes, memberships, identities, selection, schema }
    }

    pub(crate) fn wants(&self, column: &str) -> bool {
        match column {
            SEGMENTS => self.memberships,
            IDENTITIES => self.identities,
            _ => {
                column.starts_with("__")
                    || self.attributes.as_ref().is_none_or(|a| a.contains(column))
            }
        }
    }

    /// The file's leaf columns to read: internal columns whole, attributes only at the leaves
    /// the selection reaches (a struct read in part comes back with its other members null
    /// once aligned, which the merge and the projection treat as absent).
    pub(crate) fn mask(
        &self,
        parquet: &SchemaDescriptor,
        arrow: &arrow::datatypes::Schema,
    ) -> ProjectionMask {
        let mut leaves = Vec::new();
        let mut next = 0;
        for (root, field) in parquet.root_schema().get_fields().iter().enumerate() {
            let count = (next..parquet.num_columns())
                .take_while(|i| parquet.get_column_root_idx(*i) == root)
                .count();
            let range = next..next + count;
            next += count;
            let name = field.name();
            if !self.wants(name) {
                continue;
            }
            // The Arrow schema of a Parquet file lists its root fields in the same order; the
            // search by name is a fallback (a wide file has thousands of roots).
            let field = match arrow.fields().get(root) {
                Some(f) if f.name() == name => Some(f.as_ref()),
                _ => arrow.field_with_name(name).ok(),
            };
            let picked = match (&self.selection, field) {
                (Some(selection), Some(f)) if !name.starts_with("__") => {
                    let mut picked = Vec::with_capacity(count);
                    leaf_picks(f.data_type(), selection.children.get(name), &mut picked);
                    // A type whose leaves the walk does not line up with is read whole.
                    (picked.len() == count).then_some(picked)
                }
                _ => None,
            };
            match picked {
                Some(picked) => {
                    leaves.extend(range.zip(picked).filter(|(_, p)| *p).map(|(i, _)| i))
                }
                None => leaves.extend(range),
            }
        }
        ProjectionMask::leaves(parquet, leaves)
    }
}

/// `batch` with its attribute columns narrowed to what `selection` reaches ([`narrow`]);
/// internal columns stay whole.
pub(crate) fn narrow_batch(
    batch: &RecordBatch,
    selection: &project::Selection,
) -> segport_store::Result<RecordBatch> {
    let schema = batch.schema();
    let mut fields = Vec::with_capacity(batch.num_columns());
    let mut columns = Vec::with_capacity(batch.num_columns());
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        let column = match selection.children.get(field.name()) {
            Some(s) if !field.name().starts_with("__") => narrow(column, s)?,
            _ => column.clone(),
        };
        fields.push(field.as_ref().clone().with_data_type(column.data_type().clone()));
        columns.push(column);
    }
    let options = arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    RecordBatch::try_new_with_options(
        Arc::new(arrow::datatypes::Schema::new(fields)),
        columns,
        &options,
    )
    .map_err(segport_store::StoreError::arrow("narrowing a batch"))
}

/// `array` without the struct members `selection` does not reach, without copying (the same
/// rule as [`leaf_picks`]: lists are transparent, maps and leaves are kept whole). A struct
/// left without members keeps its length and validity; alignment fills its members back in
/// as nulls.
fn narrow(array: &ArrayRef, selection: &project::Selection) -> segport_store::Result<ArrayRef> {
    if selection.all {
        return Ok(array.clone());
    }
    let error = segport_store::StoreError::arrow("narrowing a column");
    match array.data_type() {
        DataType::Struct(fields) => {
            let s = array.as_struct();
            let mut kept_fields = Vec::new();
            let mut kept = Vec::new();
            for (f, child) in fields.iter().zip(s.columns()) {
                if let Some(sel) = selection.children.get(f.name()) {
                    let child = narrow(child, sel)?;
                    kept_fields.push(f.as_ref().clone().with_data_type(child.data_type().clone()));
                    kept.push(child);
                }
            }
            if kept.is_empty() {
                return Ok(Arc::new(StructArray::new_empty_fields(s.len(), s.nulls().cloned())));
            }
            let narrowed = StructArray::try_new(kept_fields.into(), kept, s.nulls().cloned())
                .map_err(error)?;
            Ok(Arc::new(narrowed))
        }
        DataType::List(item) => {
            let l = array.as_list::<i32>();
            let values = narrow(l.values(), selection)?;
            let item = Arc::new(item.as_ref().clone().with_data_type(values.data_type().clone()));
            let narrowed =
                ListArray::try_new(item, l.offsets().clone(), values, l.nulls().cloned())
                    .map_err(error)?;
            Ok(Arc::new(narrowed))
        }
        _ => Ok(array.clone()),
    }
}

/// Whether each leaf of a value of type `data_type` is reached by `selection`, in the order of
/// the Parquet leaves. Lists are transparent to selections; a map is read whole when anything
/// of it is selected.
fn leaf_picks(data_type: &DataType, selection: Option<&project::Selection>, out: &mut Vec<bool>) {
    match data_type {
        DataType::Struct(fields) => {
            for f in fields {
                let child =
                    selection.and_then(|s| if s.all { Some(s) } else { s.children.get(f.name()) });
                leaf_picks(f.data_type(), child, out);
            }
        }
        DataType::List(item) | DataType::LargeList(item) => {
            leaf_picks(item.data_type(), selection, out)
        }
        DataType::Map(entries, _) => {
            let whole = project::Selection { all: true, children: BTreeMap::new() };
            leaf_picks(entries.data_type(), selection.map(|_| &whole), out)
        }
        _ => out.push(selection.is_some()),
    }
}
