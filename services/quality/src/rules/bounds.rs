//! Inclusive bounds, shared by `length` (counts) and `range` (numbers).

use std::fmt::Display;

use osp_protocol::Error;

/// `min ..= max`, either end open; at least one is given.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bounds<T> {
    min: Option<T>,
    max: Option<T>,
}

impl<T: PartialOrd + Display + Copy> Bounds<T> {
    /// Refuses bounds that check nothing (neither end) or nothing can pass (`min > max`).
    pub fn new(min: Option<T>, max: Option<T>) -> Result<Bounds<T>, Error> {
        match (min, max) {
            (None, None) => {
                Err(invalid("params", "names neither min nor max, so the rule would check nothing".to_owned()))
            }
            (Some(min), Some(max)) if min > max => {
                Err(invalid("params.min", format!("{min} is greater than max {max}, so nothing could pass")))
            }
            _ => Ok(Bounds { min, max }),
        }
    }

    /// Why `got` is out of bounds (`below the minimum 3`), or `None` when it is within.
    pub fn violation(&self, got: T) -> Option<String> {
        match (self.min, self.max) {
            (Some(min), _) if got < min => Some(format!("below the minimum {min}")),
            (_, Some(max)) if got > max => Some(format!("above the maximum {max}")),
            _ => None,
        }
    }

    /// The bounds in words: `between 1 and 5`, `at least 1`, `at most 5`.
    pub fn describe(&self) -> String {
        match (self.min, self.max) {
            (Some(min), Some(max)) => format!("between {min} and {max}"),
            (Some(min), None) => format!("at least {min}"),
            (None, Some(max)) => format!("at most {max}"),
            (None, None) => "unbounded".to_owned(),
        }
    }
}

fn invalid(field: &str, reason: String) -> Error {
    Error::Invalid { field: field.to_owned(), reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_inclusive() {
        let bounds = Bounds::new(Some(1), Some(3)).unwrap();
        assert_eq!(bounds.violation(1), None);
        assert_eq!(bounds.violation(3), None);
        assert_eq!(bounds.violation(0).unwrap(), "below the minimum 1");
        assert_eq!(bounds.violation(4).unwrap(), "above the maximum 3");
        assert_eq!(bounds.describe(), "between 1 and 3");
        assert_eq!(Bounds::new(Some(2), Some(2)).unwrap().violation(2), None);
    }

    #[test]
    fn refuses_bounds_that_check_nothing_or_pass_nothing() {
        assert!(matches!(Bounds::<u64>::new(None, None), Err(Error::Invalid { field, .. }) if field == "params"));
        assert!(
            matches!(Bounds::new(Some(5.0), Some(1.0)), Err(Error::Invalid { field, .. }) if field == "params.min")
        );
    }
}
