//! New members on their way from the staging to Meta during a first sync (see
//! [`super::first_sync`]): each one's cells and the ledger columns that go with them.
use super::cells::PackedRows;
use super::member::Member;

/// A member's ledger columns besides its cells.
#[derive(Debug, Clone, Copy)]
pub struct MemberSource {
    pub member_key: [u8; 32],
    pub filled: i16,
    pub tenant_id: i32,
    pub customer_id: i64,
    pub digest: i64,
    pub invalid_keys: i32,
    pub filled_keys: i32,
}

impl MemberSource {
    pub fn of(member: &Member, digest: i64) -> Self {
        MemberSource {
            member_key: member.member_key,
            filled: member.filled,
            tenant_id: member.tenant_id,
            customer_id: member.customer_id,
            digest,
            invalid_keys: member.invalid_keys,
            filled_keys: member.filled_keys,
        }
    }
}

/// Up to one upload batch of new members.
#[derive(Default)]
pub struct NewMembers {
    pub sources: Vec<MemberSource>,
    pub cells: PackedRows,
}

impl NewMembers {
    /// Room for `rows` members and `cell_bytes` of packed cells, so a batch is filled without
    /// regrowing (and copying) its buffers.
    pub fn with_capacity(rows: usize, cell_bytes: usize) -> Self {
        NewMembers {
            sources: Vec::with_capacity(rows),
            cells: PackedRows::with_capacity(rows, cell_bytes),
        }
    }
    pub fn push(&mut self, source: MemberSource, cells: &[u8]) {
        self.sources.push(source);
        self.cells.push(cells);
    }
    pub fn len(&self) -> usize {
        self.sources.len()
    }
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }
}
