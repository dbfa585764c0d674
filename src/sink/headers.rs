//! The one header builder of pixeld's event messages, for every path to
//! Kafka (journal records shipped later, and direct messages): `type`
//! (what consumers dispatch on), and in cluster mode `pixeld-input`, the
//! attribution engine's input in its compact binary form
//! ([`crate::event::input`]), so a member reads a few bytes instead of
//! parsing the JSON (27% of a member's CPU per input, issue 21). Other
//! consumers ignore a header they do not know.

use crate::event::EventType;

/// The header carrying the engine's input. Empty: the event is nothing to
/// the engine (anonymous, invalid traffic, a plain segment), so a member
/// skips it without reading the JSON.
pub const INPUT: &str = "pixeld-input";

/// The header naming the event's type.
pub const TYPE: &str = "type";

/// An event message's headers, borrowed.
pub struct EventHeaders<'a> {
    list: [(&'static str, &'a [u8]); 2],
    len: usize,
}

impl<'a> EventHeaders<'a> {
    /// `type`, and `pixeld-input` when `input` is given.
    pub fn new(kind: EventType, input: Option<&'a [u8]>) -> EventHeaders<'a> {
        let mut list = [(TYPE, kind.as_str().as_bytes()), (INPUT, &[][..])];
        let len = match input {
            Some(bytes) => {
                list[1].1 = bytes;
                2
            }
            None => 1,
        };
        EventHeaders { list, len }
    }

    pub fn as_slice(&self) -> &[(&'a str, &'a [u8])] {
        &self.list[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_input_rides_only_when_given() {
        let plain = EventHeaders::new(EventType::Click, None);
        assert_eq!(plain.as_slice(), &[(TYPE, &b"click"[..])]);
        let with = EventHeaders::new(EventType::Click, Some(b"\x02abc"));
        assert_eq!(
            with.as_slice(),
            &[(TYPE, &b"click"[..]), (INPUT, &b"\x02abc"[..])]
        );
        let nothing = EventHeaders::new(EventType::Impression, Some(b""));
        assert_eq!(nothing.as_slice()[1], (INPUT, &b""[..]));
    }
}
