//! PostgreSQL's binary `COPY` format, for the staging table and the ledger.
use bytes::{BufMut, BytesMut};

/// Signature, flags, header extension length.
pub const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// End of data.
pub const TRAILER: [u8; 2] = (-1i16).to_be_bytes();

/// One tuple being written: its field count, then each field's length and bytes.
pub struct Tuple<'a>(&'a mut BytesMut);

impl<'a> Tuple<'a> {
    pub fn start(buf: &'a mut BytesMut, fields: i16) -> Self {
        buf.put_i16(fields);
        Tuple(buf)
    }
    pub fn bytes(self, value: &[u8]) -> Self {
        self.0.put_i32(value.len() as i32);
        self.0.put_slice(value);
        self
    }
    pub fn i64(self, value: i64) -> Self {
        self.0.put_i32(8);
        self.0.put_i64(value);
        self
    }
    pub fn i32(self, value: i32) -> Self {
        self.0.put_i32(4);
        self.0.put_i32(value);
        self
    }
    pub fn i16(self, value: i16) -> Self {
        self.0.put_i32(2);
        self.0.put_i16(value);
        self
    }
    pub fn bool(self, value: bool) -> Self {
        self.0.put_i32(1);
        self.0.put_u8(u8::from(value));
        self
    }
    pub fn null(self) -> Self {
        self.0.put_i32(-1);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tuple_is_its_field_count_then_each_length_and_value() {
        let mut buf = BytesMut::new();
        Tuple::start(&mut buf, 3).i16(7).bytes(b"ab").null();
        assert_eq!(
            &buf[..],
            &[
                0, 3, 0, 0, 0, 2, 0, 7, 0, 0, 0, 2, b'a', b'b', 0xff, 0xff, 0xff, 0xff
            ]
        );
    }
}
