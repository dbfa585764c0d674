/// A short, fixed-capacity set of warning codes. Codes are static strings so
/// recording one never allocates.
#[derive(Clone, Copy, Default)]
pub struct Warnings {
    /// Codes in the order they were raised.
    codes: [&'static str; Warnings::CAPACITY],
    /// How many slots of `codes` are used.
    len: u8,
}

impl Warnings {
    pub const CAPACITY: usize = 12;

    /// Adds `code` once; past the capacity further codes are dropped, as the
    /// first ones already say the request was unusual.
    pub fn push(&mut self, code: &'static str) {
        if self.contains(code) || self.len as usize == Self::CAPACITY {
            return;
        }
        self.codes[self.len as usize] = code;
        self.len += 1;
    }

    pub fn contains(&self, code: &str) -> bool {
        self.as_slice().contains(&code)
    }

    pub fn as_slice(&self) -> &[&'static str] {
        &self.codes[..self.len as usize]
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl std::fmt::Debug for Warnings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_drops_duplicates_and_overflow() {
        let mut w = Warnings::default();
        w.push("a");
        w.push("b");
        w.push("a");
        assert_eq!(w.as_slice(), &["a", "b"]);
        for _ in 0..20 {
            w.push("c");
        }
        let many = ["d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n"];
        for c in many {
            w.push(c);
        }
        assert_eq!(w.as_slice().len(), Warnings::CAPACITY);
    }
}
