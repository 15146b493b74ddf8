//! Packed lists: the wire format of the batch calls (a 4-byte little-endian length, then
//! that many bytes, per entry; 0xFFFFFFFF marks an absent value).

use clusterkit::Error;

/// Splits a packed list (entries of a 4-byte little-endian length and that many bytes).
pub(crate) fn unpack<'a>(mut buf: &'a [u8], name: &str) -> Result<Vec<&'a [u8]>, Error> {
    let mut items = Vec::new();
    while !buf.is_empty() {
        let Some((head, rest)) = buf.split_first_chunk::<4>() else {
            return Err(Error::invalid(
                name,
                format!(
                    "packed list entry {} is cut short: {} bytes left, a length needs 4",
                    items.len(),
                    buf.len()
                ),
            ));
        };
        let len = u32::from_le_bytes(*head) as usize;
        if len > rest.len() {
            return Err(Error::invalid(
                name,
                format!(
                    "packed list entry {} says {len} bytes but only {} follow",
                    items.len(),
                    rest.len()
                ),
            ));
        }
        let (item, rest) = rest.split_at(len);
        items.push(item);
        buf = rest;
    }
    Ok(items)
}

/// Appends one entry to a packed list; `None` is the absent marker 0xFFFFFFFF.
pub(crate) fn pack(out: &mut Vec<u8>, item: Option<&[u8]>) -> Result<(), Error> {
    match item {
        None => out.extend_from_slice(&u32::MAX.to_le_bytes()),
        Some(b) => {
            let len = u32::try_from(b.len())
                .ok()
                .filter(|&n| n != u32::MAX)
                .ok_or_else(|| Error::invalid("value", "is larger than a packed list can hold"))?;
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(b);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_lists_round_trip_and_reject_malformed_input() {
        let mut buf = Vec::new();
        pack(&mut buf, Some(b"ab")).unwrap();
        pack(&mut buf, Some(b"")).unwrap();
        pack(&mut buf, Some(b"xyz")).unwrap();
        let items = unpack(&buf, "list").unwrap();
        assert_eq!(items, vec![&b"ab"[..], &b""[..], &b"xyz"[..]]);
        assert!(unpack(&[], "list").unwrap().is_empty());
        // A length cut short, and an entry longer than what follows.
        let e = unpack(&buf[..buf.len() - 1], "list").unwrap_err();
        assert!(e.to_string().contains("only 2 follow"), "{e}");
        let e = unpack(&[1, 0], "list").unwrap_err();
        assert!(e.to_string().contains("cut short"), "{e}");
        // Absent values are the 0xFFFFFFFF marker, which is never a valid input length.
        let mut absent = Vec::new();
        pack(&mut absent, None).unwrap();
        assert_eq!(absent, vec![0xff; 4]);
        assert!(unpack(&absent, "list").is_err());
    }
}
