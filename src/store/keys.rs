//! Key encodings. Integers are big-endian so that byte order is numeric order and
//! ranges over a prefix (all likes of post 7) are contiguous.

/// A table key: a fixed, order-preserving byte encoding.
pub trait Key: Sized {
    /// The bytes stored in sled.
    fn encode(&self) -> Vec<u8>;
    /// Back from stored bytes; `None` if they are not of this key's shape.
    fn decode(bytes: &[u8]) -> Option<Self>;
}

impl Key for u64 {
    fn encode(&self) -> Vec<u8> {
        self.to_be_bytes().to_vec()
    }
    fn decode(bytes: &[u8]) -> Option<Self> {
        Some(u64::from_be_bytes(bytes.try_into().ok()?))
    }
}

impl Key for (u64, u64) {
    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(16);
        v.extend_from_slice(&self.0.to_be_bytes());
        v.extend_from_slice(&self.1.to_be_bytes());
        v
    }
    fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != 16 {
            return None;
        }
        Some((u64::decode(&bytes[..8])?, u64::decode(&bytes[8..])?))
    }
}

impl Key for (u64, u64, u64) {
    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(24);
        v.extend_from_slice(&self.0.to_be_bytes());
        v.extend_from_slice(&self.1.to_be_bytes());
        v.extend_from_slice(&self.2.to_be_bytes());
        v
    }
    fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != 24 {
            return None;
        }
        Some((
            u64::decode(&bytes[..8])?,
            u64::decode(&bytes[8..16])?,
            u64::decode(&bytes[16..])?,
        ))
    }
}

impl Key for String {
    fn encode(&self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }
    fn decode(bytes: &[u8]) -> Option<Self> {
        String::from_utf8(bytes.to_vec()).ok()
    }
}

impl Key for [u8; 32] {
    fn encode(&self) -> Vec<u8> {
        self.to_vec()
    }
    fn decode(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_keys_sort_numerically() {
        let mut keys: Vec<Vec<u8>> = [300u64, 2, 70_000, 1].iter().map(Key::encode).collect();
        keys.sort();
        let back: Vec<u64> = keys.iter().map(|k| u64::decode(k).unwrap()).collect();
        assert_eq!(back, vec![1, 2, 300, 70_000]);
    }

    #[test]
    fn pairs_round_trip_and_group_by_first() {
        let k = (7u64, 9u64);
        assert_eq!(<(u64, u64)>::decode(&k.encode()), Some(k));
        assert!((7u64, u64::MAX).encode() < (8u64, 0u64).encode());
        assert_eq!(<(u64, u64)>::decode(&[1, 2, 3]), None);
    }
}
