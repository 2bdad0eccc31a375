//! The names policies, scenarios and command lines give the engine's parts
//! (detector, selector, placement, pattern). Each type parses its own names
//! with `FromStr` and prints them with `Display`; this is the shared rule:
//! ASCII case does not matter, and an unknown name is an error that lists
//! the known ones.

/// A name that is none of the known ones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {name:?} (known: {})", .known.join(", "))]
pub struct UnknownName {
    /// What was being named: "detector", "selector", "placement", "pattern".
    pub what: &'static str,
    /// The name as given.
    pub name: String,
    /// The names that would have been accepted.
    pub known: Vec<&'static str>,
}

/// Finds `name` among `all` by their names (see the module rule).
pub(crate) fn parse<T: Copy>(
    what: &'static str,
    name: &str,
    all: &[T],
    name_of: fn(T) -> &'static str,
) -> Result<T, UnknownName> {
    all.iter()
        .copied()
        .find(|t| name_of(*t).eq_ignore_ascii_case(name))
        .ok_or_else(|| UnknownName {
            what,
            name: name.to_string(),
            known: all.iter().map(|t| name_of(*t)).collect(),
        })
}

#[cfg(test)]
mod tests {
    use crate::{DetectorKind, PatternKind, Placement, Selector};

    /// Every name prints as it parses, and parsing ignores ASCII case.
    #[test]
    fn names_round_trip() {
        for k in DetectorKind::ALL {
            assert_eq!(k.to_string().parse::<DetectorKind>(), Ok(k));
            assert_eq!(k.to_string().to_uppercase().parse::<DetectorKind>(), Ok(k));
        }
        for s in Selector::ALL {
            assert_eq!(s.to_string().parse::<Selector>(), Ok(s));
        }
        for p in Placement::ALL {
            assert_eq!(p.to_string().parse::<Placement>(), Ok(p));
        }
        for p in PatternKind::ALL {
            assert_eq!(p.to_string().parse::<PatternKind>(), Ok(p));
        }
        assert_eq!("sandpiper".parse(), Ok(DetectorKind::Sandpiper));
        assert_eq!(DetectorKind::Sandpiper.to_string(), "sp");
        assert_eq!(Placement::PowerAware.to_string(), "power-aware");
    }

    #[test]
    fn unknown_names_list_the_known_ones() {
        let e = "xyz".parse::<Selector>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown selector \"xyz\" (known: mmt, rs, mc, mu, vsr)"
        );
        let e = "often".parse::<PatternKind>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown pattern \"often\" (known: consolidate, balance, auto)"
        );
        let e = "foo".parse::<DetectorKind>().unwrap_err().to_string();
        assert!(e.contains("thr, iqr, mad, lr, lrr, sp"), "{e}");
        assert!("".parse::<Placement>().is_err());
    }
}
