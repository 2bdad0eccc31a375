use thiserror::Error;

/// A quantity that cannot be understood; the message names the input and
/// what would have been accepted.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ParseError {
    #[error("empty {what}")]
    Empty { what: &'static str },
    #[error("'{input}': a {what} needs a unit, e.g. {example}")]
    NoUnit {
        input: String,
        what: &'static str,
        example: &'static str,
    },
    #[error("'{input}': expected a number followed by a unit, e.g. {example}")]
    NoNumber {
        input: String,
        example: &'static str,
    },
    #[error("'{input}': unknown unit '{unit}' (use one of {known})")]
    UnknownUnit {
        input: String,
        unit: String,
        known: &'static str,
    },
    #[error("'{input}': unit '{unit}' is ambiguous: {hint}")]
    AmbiguousUnit {
        input: String,
        unit: String,
        hint: String,
    },
    #[error("'{input}': must be greater than zero")]
    Zero { input: String },
    #[error("'{input}': too large")]
    TooLarge { input: String },
}
