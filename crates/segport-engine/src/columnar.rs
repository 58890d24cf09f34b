//! Output rows built column by column from the store's Arrow batches: attribute columns are
//! merged leaf by leaf (per output row, the strongest fragment with a non-null value, as the
//! JSON overlay of `merge` does) and gathered with `interleave`, then cut to the projection;
//! the XDM maps are built with Arrow builders. No JSON is made.
//!
//! The result must equal what the JSON path (`merge` + `project::project` + `encode_rows`)
//! makes of the same row, including its rules for empty values: under a partial selection a
//! struct left with nothing selected becomes null, while list elements keep their place and a
//! wholly selected value is kept as it is.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    new_null_array, Array, ArrayRef, BooleanBuilder, ListArray, MapArray, RecordBatch,
    RecordBatchOptions, StringBuilder, StructArray, TimestampMillisecondBuilder,
};
use arrow::buffer::{NullBuffer, OffsetBuffer};
use arrow::datatypes::{DataType, FieldRef, Fields, SchemaRef};
use segport_store::align::{align_array, ByName};
use segport_store::schema::UTC;

use crate::error::EngineError;
use crate::merge::{resolve_identities, resolve_memberships, Identity, ReadBatch};
use crate::project::Selection;

/// One output row: the profile's fragments (batch and row), weakest first, and its events.
/// Identities and memberships are merged when the batch is encoded, borrowing their strings.
#[derive(Clone)]
pub(crate) struct ColumnarRow {
    pub fragments: Vec<(Arc<ReadBatch>, usize)>,
    /// The events of `timeSeriesEvents` (already deduplicated, windowed and ordered).
    pub events: Vec<(Arc<ReadBatch>, usize)>,
}

/// The merged identities of each row of a batch being encoded, resolved once per batch into
/// one vector (not one per row).
pub(crate) struct RowIdentities<'a> {
    items: Vec<Identity<'a>>,
    /// Where each row's identities end in `items`.
    ends: Vec<usize>,
}

impl<'a> RowIdentities<'a> {
    /// The identities of each row, from its fragments (each a loaded batch and a row).
    fn of<R, F>(rows: R) -> Self
    where
        R: IntoIterator<Item = F>,
        F: IntoIterator<Item = (&'a ReadBatch, usize)>,
    {
        let mut out = Self { items: Vec::new(), ends: Vec::new() };
        for fragments in rows {
            resolve_identities(fragments, &mut out.items);
            out.ends.push(out.items.len());
        }
        out
    }

    /// The merged identities of each profile of `rows`.
    pub(crate) fn of_profiles(rows: &'a [ColumnarRow]) -> Self {
        Self::of(rows.iter().map(|r| r.fragments.iter().map(|(l, row)| (l.as_ref(), *row))))
    }

    fn row(&self, i: usize) -> &[Identity<'a>] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.items[start..self.ends[i]]
    }

    fn rows(&self) -> impl ExactSizeIterator<Item = &[Identity<'a>]> {
        (0..self.ends.len()).map(|i| self.row(i))
    }

    /// Counts every row once under each namespace its identities have.
    pub(crate) fn count_namespaces(&self, counts: &mut BTreeMap<String, u64>) {
        for row in self.rows() {
            crate::merge::count_namespaces(row, counts);
        }
    }
}

fn output_error(e: impl std::error::Error + Send + Sync + 'static) -> EngineError {
    EngineError::output(e)
}

/// `rows` (with their merged `identities`) as a record batch of `schema`, projected by
/// `selection` (and their events by `event_selection`).
pub(crate) fn encode(
    schema: &SchemaRef,
    selection: &Selection,
    event_selection: Option<&Selection>,
    rows: &[ColumnarRow],
    identities: &RowIdentities,
) -> Result<RecordBatch, EngineError> {
    // Distinct source batches, and each output row's candidates (source, row), weakest first.
    let mut sources: Vec<&Arc<ReadBatch>> = Vec::new();
    let mut candidates = Candidates { offsets: vec![0], items: Vec::new() };
    for r in rows {
        for (loaded, row) in &r.fragments {
            candidates.items.push((source_of(&mut sources, loaded), *row));
        }
        candidates.offsets.push(candidates.items.len());
    }
    let source_columns = SourceColumns::new(&sources);
    let mut columns = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        let name = field.name().as_str();
        let sel = selection.children.get(name).cloned().unwrap_or_default();
        let column = match name {
            "identityMap" => identity_map(identities.rows(), &sel)?,
            "timeSeriesEvents" => {
                event_list(rows, event_selection.unwrap_or(&ALL), field.data_type())?
            }
            "identities" => legacy_identities(identities)?,
            "segmentMembership" => membership_map(rows, &sel)?,
            _ => merge_leaves(&source_columns.of(name)?, &candidates)?,
        };
        columns.push(project(&column, &sel, field.data_type(), false)?);
    }
    RecordBatch::try_new_with_options(
        schema.clone(),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(rows.len())),
    )
    .map_err(output_error)
}

/// The index of `loaded` among the distinct `sources` of a batch being built, added if new.
fn source_of<'a>(sources: &mut Vec<&'a Arc<ReadBatch>>, loaded: &'a Arc<ReadBatch>) -> usize {
    match sources.iter().position(|s| Arc::ptr_eq(s, loaded)) {
        Some(i) => i,
        None => {
            sources.push(loaded);
            sources.len() - 1
        }
    }
}

/// The columns of the distinct source batches of an output batch, found by name.
struct SourceColumns<'a> {
    sources: Vec<(&'a Arc<ReadBatch>, ByName<'a>)>,
}

impl<'a> SourceColumns<'a> {
    fn new(sources: &[&'a Arc<ReadBatch>]) -> Self {
        Self {
            sources: sources
                .iter()
                .map(|s| (*s, ByName::new(s.batch.schema_ref().fields())))
                .collect(),
        }
    }

    /// Column `name` of every source.
    fn of(&self, name: &str) -> Result<Vec<&'a dyn Array>, EngineError> {
        self.sources
            .iter()
            .map(|(s, by_name)| {
                by_name
                    .index(name)
                    .map(|i| s.batch.column(i).as_ref())
                    .ok_or_else(|| EngineError::store(format!("no column {name} in a store batch")))
            })
            .collect()
    }
}

/// Keeps everything.
static ALL: Selection = Selection { all: true, children: BTreeMap::new() };

/// `timeSeriesEvents`: per row the list of its events, each cut to `selection` (an event keeps
/// its place even when nothing selected is in it, as in the JSON path).
fn event_list(
    rows: &[ColumnarRow],
    selection: &Selection,
    target: &DataType,
) -> Result<ArrayRef, EngineError> {
    let (DataType::List(item_field), Some(DataType::Struct(item_fields))) = (
        target,
        match target {
            DataType::List(f) => Some(f.data_type()),
            _ => None,
        },
    ) else {
        return Err(EngineError::output("timeSeriesEvents is not a list of structs"));
    };
    let mut sources: Vec<&Arc<ReadBatch>> = Vec::new();
    let mut indices: Vec<(usize, usize)> = Vec::new();
    let mut lengths = Vec::with_capacity(rows.len());
    for r in rows {
        for (loaded, row) in &r.events {
            indices.push((source_of(&mut sources, loaded), *row));
        }
        lengths.push(r.events.len());
    }
    let source_columns = SourceColumns::new(&sources);
    let children = item_fields
        .iter()
        .map(|f| {
            let name = f.name().as_str();
            let sel =
                if selection.all { &ALL } else { selection.children.get(name).unwrap_or(&ALL) };
            let column = if name == "identityMap" {
                // Each event's own identities.
                let identities = RowIdentities::of(
                    rows.iter()
                        .flat_map(|r| r.events.iter())
                        .map(|(loaded, row)| std::iter::once((loaded.as_ref(), *row))),
                );
                identity_map(identities.rows(), sel)?
            } else {
                let arrays = source_columns.of(name)?;
                if arrays.is_empty() {
                    new_null_array(f.data_type(), 0)
                } else {
                    arrow::compute::interleave(&arrays, &indices).map_err(output_error)?
                }
            };
            project(&column, sel, f.data_type(), false)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let items = StructArray::try_new(item_fields.clone(), children, None).map_err(output_error)?;
    let list = ListArray::try_new(
        item_field.clone(),
        OffsetBuffer::from_lengths(lengths),
        Arc::new(items),
        None,
    )
    .map_err(output_error)?;
    Ok(Arc::new(list))
}

/// Per output row, the (source, row) fragments that may give it a value, weakest first.
struct Candidates {
    offsets: Vec<usize>,
    items: Vec<(usize, usize)>,
}

impl Candidates {
    fn rows(&self) -> usize {
        self.offsets.len() - 1
    }

    fn of(&self, row: usize) -> &[(usize, usize)] {
        &self.items[self.offsets[row]..self.offsets[row + 1]]
    }
}

/// One output column from the same column of every source: a struct is present where any
/// candidate has it and merges member by member among those that do; any other value comes
/// from the strongest candidate that has one (lists are values, as in the JSON overlay).
fn merge_leaves(arrays: &[&dyn Array], candidates: &Candidates) -> Result<ArrayRef, EngineError> {
    let Some(first) = arrays.first() else {
        return Err(EngineError::output("no source for a column"));
    };
    if let DataType::Struct(fields) = first.data_type() {
        let structs: Vec<&StructArray> = arrays
            .iter()
            .map(|a| {
                a.as_any().downcast_ref::<StructArray>().ok_or_else(|| {
                    EngineError::output("a struct column that is not a struct array")
                })
            })
            .collect::<Result<_, _>>()?;
        // Only fragments where the struct is present take part below it.
        let mut present = Candidates { offsets: vec![0], items: Vec::new() };
        for row in 0..candidates.rows() {
            present
                .items
                .extend(candidates.of(row).iter().filter(|(s, r)| structs[*s].is_valid(*r)));
            present.offsets.push(present.items.len());
        }
        let children = (0..fields.len())
            .map(|i| {
                let child: Vec<&dyn Array> = structs.iter().map(|s| s.column(i).as_ref()).collect();
                merge_leaves(&child, &present)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let valid: Vec<bool> = (0..present.rows()).map(|r| !present.of(r).is_empty()).collect();
        let out = StructArray::try_new(fields.clone(), children, Some(NullBuffer::from(valid)))
            .map_err(output_error)?;
        return Ok(Arc::new(out));
    }
    // The last source is a single null, for rows no candidate gives a value.
    let null = new_null_array(first.data_type(), 1);
    let mut sources: Vec<&dyn Array> = arrays.to_vec();
    sources.push(null.as_ref());
    let indices: Vec<(usize, usize)> = (0..candidates.rows())
        .map(|row| {
            candidates
                .of(row)
                .iter()
                .rev()
                .find(|(s, r)| arrays[*s].is_valid(*r))
                .copied()
                .unwrap_or((arrays.len(), 0))
        })
        .collect();
    arrow::compute::interleave(&sources, &indices).map_err(output_error)
}

/// `array` cut down to `selection` and cast to `target`, with the JSON path's rules for empty
/// values. `keep_empty` is set for list elements, which keep their place when nothing selected
/// is in them.
fn project(
    array: &ArrayRef,
    selection: &Selection,
    target: &DataType,
    keep_empty: bool,
) -> Result<ArrayRef, EngineError> {
    if selection.all {
        return align_array(array, target).map_err(output_error);
    }
    match (array.data_type(), target) {
        (DataType::Struct(_), DataType::Struct(target_fields)) => {
            let s = array
                .as_any()
                .downcast_ref::<StructArray>()
                .ok_or_else(|| EngineError::output("a struct column that is not a struct array"))?;
            let by_name = ByName::new(s.fields());
            let children = target_fields
                .iter()
                .map(|f| match (by_name.index(f.name()), selection.children.get(f.name())) {
                    (Some(i), Some(sel)) => project(s.column(i), sel, f.data_type(), false),
                    _ => Ok(new_null_array(f.data_type(), s.len())),
                })
                .collect::<Result<Vec<_>, _>>()?;
            let nulls = if keep_empty {
                s.nulls().cloned()
            } else {
                // Valid where the struct is and at least one selected child is.
                let valid: Vec<bool> = (0..s.len())
                    .map(|i| s.is_valid(i) && children.iter().any(|c| c.is_valid(i)))
                    .collect();
                Some(NullBuffer::from(valid))
            };
            let out = StructArray::try_new(target_fields.clone(), children, nulls)
                .map_err(output_error)?;
            Ok(Arc::new(out))
        }
        (DataType::List(_), DataType::List(target_item)) => {
            let l = array
                .as_any()
                .downcast_ref::<ListArray>()
                .ok_or_else(|| EngineError::output("a list column that is not a list array"))?;
            let values = project(l.values(), selection, target_item.data_type(), true)?;
            let out = ListArray::try_new(
                target_item.clone(),
                l.offsets().clone(),
                values,
                l.nulls().cloned(),
            )
            .map_err(output_error)?;
            Ok(Arc::new(out))
        }
        // Maps are built already cut to their selection; leaves have nothing to cut.
        _ => align_array(array, target).map_err(output_error),
    }
}

/// Whether `key` of a map is selected, and with what.
fn key_selection<'a>(selection: &'a Selection, key: &str) -> Option<&'a Selection> {
    if selection.all {
        Some(selection)
    } else {
        selection.children.get(key)
    }
}

fn map_fields(value: DataType) -> (FieldRef, Fields) {
    let fields = Fields::from(vec![
        arrow::datatypes::Field::new("keys", DataType::Utf8, false),
        arrow::datatypes::Field::new("values", value, true),
    ]);
    let entries =
        Arc::new(arrow::datatypes::Field::new("entries", DataType::Struct(fields.clone()), false));
    (entries, fields)
}

/// A map column from per-row entry counts, keys and values; rows without entries are null
/// (as the JSON path leaves an empty selection out).
fn map_array(
    counts: Vec<usize>,
    keys: StringBuilder,
    values: ArrayRef,
    empty_is_null: bool,
) -> Result<ArrayRef, EngineError> {
    let (entries_field, fields) = map_fields(values.data_type().clone());
    let mut keys = keys;
    let entries = StructArray::try_new(fields, vec![Arc::new(keys.finish()), values], None)
        .map_err(output_error)?;
    let nulls =
        empty_is_null.then(|| NullBuffer::from(counts.iter().map(|c| *c > 0).collect::<Vec<_>>()));
    let map =
        MapArray::try_new(entries_field, OffsetBuffer::from_lengths(counts), entries, nulls, false)
            .map_err(output_error)?;
    Ok(Arc::new(map))
}

fn identity_item_fields() -> Fields {
    Fields::from(vec![
        arrow::datatypes::Field::new("authenticatedState", DataType::Utf8, true),
        arrow::datatypes::Field::new("id", DataType::Utf8, true),
        arrow::datatypes::Field::new("primary", DataType::Boolean, true),
    ])
}

/// `identityMap`: namespace → list of `{authenticatedState, id, primary}`, namespaces in
/// first-seen order.
fn identity_map<'r, 'a: 'r>(
    rows: impl ExactSizeIterator<Item = &'r [Identity<'a>]>,
    selection: &Selection,
) -> Result<ArrayRef, EngineError> {
    let mut counts = Vec::with_capacity(rows.len());
    let mut keys = StringBuilder::new();
    let mut list_lengths = Vec::new();
    let (mut state, mut id, mut primary) =
        (StringBuilder::new(), StringBuilder::new(), BooleanBuilder::new());
    for identities in rows {
        let mut namespaces: Vec<&str> = Vec::new();
        for i in identities {
            if !namespaces.contains(&i.namespace) {
                namespaces.push(i.namespace);
            }
        }
        let mut count = 0;
        for ns in namespaces {
            if key_selection(selection, ns).is_none() {
                continue;
            }
            keys.append_value(ns);
            count += 1;
            let mut length = 0;
            for i in identities.iter().filter(|i| i.namespace == ns) {
                state.append_option(i.authenticated_state);
                id.append_value(i.id);
                primary.append_value(i.primary);
                length += 1;
            }
            list_lengths.push(length);
        }
        counts.push(count);
    }
    let items = StructArray::try_new(
        identity_item_fields(),
        vec![Arc::new(state.finish()), Arc::new(id.finish()), Arc::new(primary.finish())],
        None,
    )
    .map_err(output_error)?;
    let item_field =
        Arc::new(arrow::datatypes::Field::new("item", items.data_type().clone(), true));
    let lists = ListArray::try_new(
        item_field,
        OffsetBuffer::from_lengths(list_lengths),
        Arc::new(items),
        None,
    )
    .map_err(output_error)?;
    map_array(counts, keys, Arc::new(lists), !selection.all)
}

/// `identities`: the legacy list of `{authenticatedState, id, namespace: {code}, primary}`.
fn legacy_identities(rows: &RowIdentities) -> Result<ArrayRef, EngineError> {
    let (mut state, mut id, mut code, mut primary) =
        (StringBuilder::new(), StringBuilder::new(), StringBuilder::new(), BooleanBuilder::new());
    let mut lengths = Vec::with_capacity(rows.ends.len());
    for identities in rows.rows() {
        for i in identities {
            state.append_option(i.authenticated_state);
            id.append_value(i.id);
            code.append_value(i.namespace);
            primary.append_value(i.primary);
        }
        lengths.push(identities.len());
    }
    let namespace_fields =
        Fields::from(vec![arrow::datatypes::Field::new("code", DataType::Utf8, true)]);
    let namespace = StructArray::try_new(namespace_fields, vec![Arc::new(code.finish())], None)
        .map_err(output_error)?;
    let fields = Fields::from(vec![
        arrow::datatypes::Field::new("authenticatedState", DataType::Utf8, true),
        arrow::datatypes::Field::new("id", DataType::Utf8, true),
        arrow::datatypes::Field::new("namespace", namespace.data_type().clone(), true),
        arrow::datatypes::Field::new("primary", DataType::Boolean, true),
    ]);
    let items = StructArray::try_new(
        fields,
        vec![
            Arc::new(state.finish()),
            Arc::new(id.finish()),
            Arc::new(namespace),
            Arc::new(primary.finish()),
        ],
        None,
    )
    .map_err(output_error)?;
    let item_field =
        Arc::new(arrow::datatypes::Field::new("item", items.data_type().clone(), true));
    let list =
        ListArray::try_new(item_field, OffsetBuffer::from_lengths(lengths), Arc::new(items), None)
            .map_err(output_error)?;
    Ok(Arc::new(list))
}

/// `segmentMembership`: namespace → segment id → `{lastQualificationTime, status, validUntil,
/// version}`; null for a profile with no (selected) membership.
fn membership_map(rows: &[ColumnarRow], selection: &Selection) -> Result<ArrayRef, EngineError> {
    let mut outer_counts = Vec::with_capacity(rows.len());
    let mut outer_keys = StringBuilder::new();
    let mut inner_counts = Vec::new();
    let mut inner_keys = StringBuilder::new();
    let mut lqt = TimestampMillisecondBuilder::new().with_timezone(UTC);
    let mut status = StringBuilder::new();
    let mut until = TimestampMillisecondBuilder::new().with_timezone(UTC);
    let mut version = StringBuilder::new();
    let mut memberships = Vec::new();
    for r in rows {
        let mut outer = 0;
        let mut current: Option<&str> = None;
        resolve_memberships(
            r.fragments.iter().map(|(l, row)| (l.as_ref(), *row)),
            &mut memberships,
        );
        for m in &memberships {
            let Some(ns_selection) = key_selection(selection, m.ns) else { continue };
            if key_selection(ns_selection, m.segment).is_none() {
                continue;
            }
            if current != Some(m.ns) {
                current = Some(m.ns);
                outer_keys.append_value(m.ns);
                outer += 1;
                inner_counts.push(0);
            }
            inner_keys.append_value(m.segment);
            lqt.append_option(m.last_qualification_ms);
            status.append_value(m.status);
            until.append_option(m.valid_until_ms);
            version.append_option(m.version);
            if let Some(last) = inner_counts.last_mut() {
                *last += 1;
            }
        }
        outer_counts.push(outer);
    }
    let ts = DataType::Timestamp(arrow::datatypes::TimeUnit::Millisecond, Some(UTC.into()));
    let fields = Fields::from(vec![
        arrow::datatypes::Field::new("lastQualificationTime", ts.clone(), true),
        arrow::datatypes::Field::new("status", DataType::Utf8, true),
        arrow::datatypes::Field::new("validUntil", ts, true),
        arrow::datatypes::Field::new("version", DataType::Utf8, true),
    ]);
    let values = StructArray::try_new(
        fields,
        vec![
            Arc::new(lqt.finish()),
            Arc::new(status.finish()),
            Arc::new(until.finish()),
            Arc::new(version.finish()),
        ],
        None,
    )
    .map_err(output_error)?;
    // Inner maps always hold at least one entry; the outer map is null when empty, as the
    // JSON path leaves `segmentMembership` out of a profile without memberships.
    let inner = map_array(inner_counts, inner_keys, Arc::new(values), false)?;
    map_array(outer_counts, outer_keys, inner, true)
}
