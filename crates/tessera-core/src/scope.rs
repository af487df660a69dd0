//! OAuth scopes: a space-separated set whose order never matters.

use std::collections::BTreeSet;

/// A normalised scope set (sorted, de-duplicated).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Scopes(BTreeSet<String>);

impl Scopes {
    pub fn parse(raw: &str) -> Self {
        Self(raw.split(' ').filter(|s| !s.is_empty()).map(str::to_owned).collect())
    }

    pub fn contains(&self, scope: &str) -> bool {
        self.0.contains(scope)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    /// True when every scope of `self` is also in `other`.
    pub fn is_subset_of(&self, other: &Scopes) -> bool {
        self.0.is_subset(&other.0)
    }

    /// The scopes of `self` that `allowed` also holds.
    pub fn intersection(&self, allowed: &Scopes) -> Scopes {
        Scopes(self.0.intersection(&allowed.0).cloned().collect())
    }

    pub fn union(&self, other: &Scopes) -> Scopes {
        Scopes(self.0.union(&other.0).cloned().collect())
    }

    /// True when every scope is a valid RFC 6749 scope token (printable ASCII except `"` and `\`).
    pub fn is_well_formed(&self) -> bool {
        self.0.iter().all(|s| s.bytes().all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b)))
    }
}

impl<S: Into<String>> FromIterator<S> for Scopes {
    fn from_iter<I: IntoIterator<Item = S>>(items: I) -> Self {
        Self(items.into_iter().map(Into::into).collect())
    }
}

impl std::fmt::Display for Scopes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut first = true;
        for s in &self.0 {
            if !first {
                f.write_str(" ")?;
            }
            f.write_str(s)?;
            first = false;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_and_duplicates_do_not_matter() {
        assert_eq!(Scopes::parse("openid email  profile"), Scopes::parse("profile openid email email"));
        assert_eq!(Scopes::parse("b a").to_string(), "a b");
        assert!(Scopes::parse("openid").is_subset_of(&Scopes::parse("openid email")));
        assert!(!Scopes::parse("openid\"").is_well_formed());
    }
}
