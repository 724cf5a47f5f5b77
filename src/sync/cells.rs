//! The row of cells sent to Meta, packed for the ledger: a SHA-256 cell takes 33 bytes instead of
//! 64 hex characters, which halves the ledger and makes the diff compare plain bytes.
//!
//! Layout, one entry per schema key in order: `0` = empty cell; `1` + 32 bytes = a lowercase-hex
//! SHA-256 cell; `2` + u16 big-endian length + UTF-8 = any other cell (EXTERN_ID, MADID, LOOKALIKE_VALUE).

const EMPTY: u8 = 0;
const DIGEST: u8 = 1;
const TEXT: u8 = 2;

/// The packed size of a row of `keys` SHA-256 cells (a tag and 32 bytes each): what buffers of
/// such rows are sized by.
pub const fn hashed_row_bytes(keys: usize) -> usize {
    keys * (1 + 32)
}

/// Appends one cell to a packed row.
pub fn push_cell(packed: &mut Vec<u8>, cell: &str) {
    if cell.is_empty() {
        packed.push(EMPTY);
        return;
    }
    if cell.len() == 64 {
        let mut digest = [0u8; 32];
        // The decode checks for hex digits; a cell that had an uppercase one would not come back
        // the same. Without an early exit the check runs as a few vector instructions.
        if const_hex::decode_to_slice(cell, &mut digest).is_ok()
            && cell
                .bytes()
                .fold(true, |lower, b| lower & !b.is_ascii_uppercase())
        {
            packed.push(DIGEST);
            packed.extend_from_slice(&digest);
            return;
        }
    }
    // The normalizer refuses longer values; were one to come through, it is cut where a
    // character starts, so the packed row still decodes.
    let mut end = cell.len().min(u16::MAX as usize);
    while !cell.is_char_boundary(end) {
        end -= 1;
    }
    let bytes = &cell.as_bytes()[..end];
    packed.push(TEXT);
    packed.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    packed.extend_from_slice(bytes);
}

/// One packed cell, borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cell<'a> {
    Empty,
    Digest(&'a [u8; 32]),
    Text(&'a str),
}

impl Cell<'_> {
    /// Calls `f` with the cell exactly as sent to Meta, without allocating.
    pub fn with_str<T>(self, f: impl FnOnce(&str) -> T) -> T {
        match self {
            Cell::Empty => f(""),
            Cell::Digest(d) => f(const_hex::Buffer::<32>::new().format(d)),
            Cell::Text(t) => f(t),
        }
    }
}

/// The cells of a packed row, in schema order.
pub fn cells(packed: &[u8]) -> impl Iterator<Item = Result<Cell<'_>, CorruptRow>> {
    let mut rest = packed;
    std::iter::from_fn(move || {
        let (&tag, tail) = rest.split_first()?;
        let (cell, next) = match tag {
            EMPTY => (Cell::Empty, tail),
            DIGEST if tail.len() >= 32 => {
                let (digest, next) = tail.split_at(32);
                (Cell::Digest(digest.try_into().expect("32 bytes")), next)
            }
            TEXT if tail.len() >= 2 => {
                let len = u16::from_be_bytes([tail[0], tail[1]]) as usize;
                match tail
                    .get(2..2 + len)
                    .and_then(|t| std::str::from_utf8(t).ok())
                {
                    Some(text) => (Cell::Text(text), &tail[2 + len..]),
                    None => {
                        rest = &[];
                        return Some(Err(CorruptRow));
                    }
                }
            }
            _ => {
                rest = &[];
                return Some(Err(CorruptRow));
            }
        };
        rest = next;
        Some(Ok(cell))
    })
}

/// Unpacks a row into its cells as sent to Meta.
pub fn unpack(packed: &[u8]) -> Result<Vec<String>, CorruptRow> {
    cells(packed)
        .map(|cell| cell.map(|c| c.with_str(str::to_string)))
        .collect()
}

/// A packed row that serializes as Meta's row: an array of cell strings.
pub struct PackedRow<'a>(pub &'a [u8]);

impl serde::Serialize for PackedRow<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeSeq};
        let mut seq = serializer.serialize_seq(None)?;
        for cell in cells(self.0) {
            let cell = cell.map_err(S::Error::custom)?;
            cell.with_str(|s| seq.serialize_element(s))?;
        }
        seq.end()
    }
}

/// Packed rows in one contiguous buffer: two allocations per batch instead of one per row.
#[derive(Default)]
pub struct PackedRows {
    cells: Vec<u8>,
    /// End of each row's cells in `cells`.
    ends: Vec<usize>,
}

impl PackedRows {
    pub fn with_capacity(rows: usize, bytes: usize) -> Self {
        PackedRows {
            cells: Vec::with_capacity(bytes),
            ends: Vec::with_capacity(rows),
        }
    }
    pub fn push(&mut self, cells: &[u8]) {
        self.cells.extend_from_slice(cells);
        self.ends.push(self.cells.len());
    }
    pub fn rows(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(&self.ends)
            .map(|(start, &end)| &self.cells[start..end])
    }
}

/// Serialized straight from the packed bytes: no row is unpacked into strings.
impl serde::Serialize for PackedRows {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.rows().map(PackedRow))
    }
}

impl crate::meta::UserRows for PackedRows {
    fn row_count(&self) -> usize {
        self.ends.len()
    }

    /// The serde bytes, written by hand: a hashed cell's hex goes straight into `out`, where
    /// serde would check each of its 64 characters for escapes (a 10,000-row batch of four keys
    /// holds 40,000 of them). Text cells are escaped by `serde_json`.
    fn write_json(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        use serde::ser::Error;
        out.push(b'[');
        for (i, row) in self.rows().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.push(b'[');
            for (j, cell) in cells(row).enumerate() {
                if j > 0 {
                    out.push(b',');
                }
                match cell.map_err(serde_json::Error::custom)? {
                    Cell::Text(t) => serde_json::to_writer(&mut *out, t)?,
                    // Empty or hex: nothing to escape.
                    plain => plain.with_str(|s| {
                        out.push(b'"');
                        out.extend_from_slice(s.as_bytes());
                        out.push(b'"');
                    }),
                }
            }
            out.push(b']');
        }
        out.push(b']');
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a ledger row could not be unpacked")]
pub struct CorruptRow;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pack(cells: &[&str]) -> Vec<u8> {
        let mut packed = Vec::new();
        for c in cells {
            push_cell(&mut packed, c);
        }
        packed
    }

    #[test]
    fn a_hashed_cell_takes_thirty_three_bytes_and_comes_back_identical() {
        let hash = "f1904cf1a9d73a55fa5de0ac823c4403ded71afd4c3248d00bdcd0866552bb79";
        let packed = pack(&[hash, "", "CRM-20-00000001"]);
        assert_eq!(packed.len(), 33 + 1 + 3 + 15);
        assert_eq!(
            unpack(&packed).unwrap(),
            vec![
                hash.to_string(),
                String::new(),
                "CRM-20-00000001".to_string()
            ]
        );
    }

    #[test]
    fn uppercase_hex_is_kept_as_text_so_it_round_trips_exactly() {
        let upper = "F1904CF1A9D73A55FA5DE0AC823C4403DED71AFD4C3248D00BDCD0866552BB79";
        assert_eq!(unpack(&pack(&[upper])).unwrap(), vec![upper.to_string()]);
    }

    #[test]
    fn a_packed_row_serializes_as_the_json_array_of_its_cells() {
        let hash = "f1904cf1a9d73a55fa5de0ac823c4403ded71afd4c3248d00bdcd0866552bb79";
        let packed = pack(&[hash, "", "CRM-\"1\""]);
        assert_eq!(
            serde_json::to_string(&PackedRow(&packed)).unwrap(),
            serde_json::to_string(&[hash, "", "CRM-\"1\""]).unwrap()
        );
        assert!(serde_json::to_string(&PackedRow(&packed[..20])).is_err());
    }

    #[test]
    fn a_cell_over_64_kb_of_multibyte_text_is_cut_where_a_character_starts() {
        let long = "é".repeat(40_000); // 80,000 bytes
        let mut packed = Vec::new();
        push_cell(&mut packed, &long);
        push_cell(&mut packed, "next");
        let decoded: Vec<_> = cells(&packed).collect::<Result<_, _>>().expect("decodes");
        let Cell::Text(cut) = decoded[0] else {
            panic!("a text cell")
        };
        assert!(cut.len() <= u16::MAX as usize && long.starts_with(cut));
        assert_eq!(cut.len(), 65_534, "the last whole character before 64 KB");
        assert_eq!(decoded[1], Cell::Text("next"));
    }

    #[test]
    fn a_truncated_row_is_reported_as_corrupt() {
        let packed = pack(&["f1904cf1a9d73a55fa5de0ac823c4403ded71afd4c3248d00bdcd0866552bb79"]);
        assert_eq!(unpack(&packed[..20]), Err(CorruptRow));
    }

    /// Hashed cells (some uppercase, kept as text), empty ones and any text.
    fn cell() -> impl Strategy<Value = String> {
        prop_oneof![
            "[0-9a-f]{64}",
            "[0-9A-F]{64}",
            Just(String::new()),
            "\\PC{0,20}",
            "[\"\\\\\u{0}-\u{1f}\u{7f}é€😀]{0,6}",
        ]
    }

    #[test]
    fn rows_written_by_hand_are_refused_when_corrupt_as_through_serde() {
        let packed = pack(&["f1904cf1a9d73a55fa5de0ac823c4403ded71afd4c3248d00bdcd0866552bb79"]);
        let mut rows = PackedRows::default();
        rows.push(&packed[..20]);
        assert!(serde_json::to_vec(&rows).is_err());
        assert!(crate::meta::UserRows::write_json(&rows, &mut Vec::new()).is_err());
    }

    proptest! {
        #[test]
        fn packed_rows_written_by_hand_are_the_bytes_serde_makes_of_them(
            rows in proptest::collection::vec(proptest::collection::vec(cell(), 0..5), 0..6)
        ) {
            let mut packed = PackedRows::default();
            for row in &rows {
                let refs: Vec<&str> = row.iter().map(String::as_str).collect();
                packed.push(&pack(&refs));
            }
            let mut by_hand = Vec::new();
            crate::meta::UserRows::write_json(&packed, &mut by_hand).unwrap();
            prop_assert_eq!(&by_hand, &serde_json::to_vec(&packed).unwrap());
            prop_assert_eq!(by_hand, serde_json::to_vec(&rows).unwrap());
        }

        #[test]
        fn any_row_of_cells_round_trips(cells in proptest::collection::vec(".{0,80}", 0..8)) {
            let refs: Vec<&str> = cells.iter().map(String::as_str).collect();
            prop_assert_eq!(unpack(&pack(&refs)).unwrap(), cells);
        }
    }
}
