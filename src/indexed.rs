//! Enums that index tables. A table kept beside its enum by hand (a count
//! typed in, a list in "the same order", a lookup ending in a fallback)
//! lets a new variant compile and then land in another variant's slot, or
//! panic on every request that uses it. [`indexed_enum!`] declares the enum
//! and its tables together: `ALL` and `COUNT` are derived from the variant
//! list, `index()` is the discriminant, and with names the text of each
//! variant and its parse come from one list, so neither can miss a variant.

/// Declares a fieldless enum with:
///
/// - `ALL`: every variant, in declaration order (`ALL[v.index()] == v`,
///   checked at compile time);
/// - `COUNT`: their number, for tables sized `[T; Self::COUNT]`;
/// - `index()`: the variant's slot in such a table (its discriminant: no
///   lookup, no fallback).
///
/// Written `Variant => "text"`, each variant also gets its text:
/// `as_str()`, and `parse()` back (None for any other text), both
/// generated from the same list. Explicit discriminants are not accepted:
/// the slots are the declaration order.
macro_rules! indexed_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)?
        }
    ) => {
        $crate::indexed::indexed_enum! {
            $(#[$meta])*
            $vis enum $name { $($(#[$vmeta])* $variant),+ }
        }

        impl $name {
            /// The variant's text (as written on the wire, in labels).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// The variant whose text is `s`; None for any other text.
            pub fn parse(s: &str) -> Option<$name> {
                match s {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }
    };
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $($(#[$vmeta:meta])* $variant:ident),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every variant, in declaration order: `ALL[v.index()] == v`.
            pub const ALL: [$name; [$($name::$variant),+].len()] = [$($name::$variant),+];

            /// How many variants: the length of every table indexed by them.
            pub const COUNT: usize = $name::ALL.len();

            /// The variant's slot in a table sized [`Self::COUNT`].
            #[inline]
            pub const fn index(self) -> usize {
                self as usize
            }
        }

        // The slots are the discriminants: a table built from `ALL` and one
        // indexed by `index()` agree.
        const _: () = {
            let mut i = 0;
            while i < $name::COUNT {
                assert!($name::ALL[i].index() == i);
                i += 1;
            }
        };
    };
}

pub(crate) use indexed_enum;

#[cfg(test)]
mod tests {
    indexed_enum! {
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        enum Plain { A, B, C }
    }

    indexed_enum! {
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        enum Named {
            /// A documented variant.
            One => "one",
            Two => "two",
        }
    }

    #[test]
    fn every_variant_is_at_its_index_and_its_text_parses_back() {
        assert_eq!(Plain::COUNT, 3);
        for (i, p) in Plain::ALL.into_iter().enumerate() {
            assert_eq!(p.index(), i);
        }
        assert_eq!(Named::ALL, [Named::One, Named::Two]);
        for n in Named::ALL {
            assert_eq!(Named::parse(n.as_str()), Some(n));
        }
        assert_eq!(Named::parse("three"), None);
    }
}
