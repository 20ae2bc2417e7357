//! Query strings, read by name: each parameter at most once, except those a route joins.
//!
//! Handlers do not use `web::Query<T>`: serde_urlencoded's errors ("invalid digit found in
//! string", "duplicate field") do not say which parameter was wrong. Here every refusal starts
//! with `query parameter '<name>'`. Parameters a route does not read are ignored, so a cache
//! buster such as `?_=123` does no harm.

use std::fmt::Display;
use std::str::FromStr;

use actix_web::web;

/// The decoded `name=value` pairs of one request, in order.
pub(super) struct QueryParams {
    pairs: Vec<(String, String)>,
}

impl QueryParams {
    /// Decodes `query` (`+` and `%XX` as in HTML forms; undecodable bytes become U+FFFD, so this
    /// cannot fail on what a client sends).
    pub(super) fn parse(query: &str) -> QueryParams {
        let pairs = web::Query::<Vec<(String, String)>>::from_query(query).map(web::Query::into_inner).unwrap_or_default();
        QueryParams { pairs }
    }

    /// Every value of `name`, in the order given.
    pub(super) fn values<'a, 'n>(&'a self, name: &'n str) -> impl Iterator<Item = &'a str> + use<'a, 'n> {
        self.pairs.iter().filter(move |(key, _)| key == name).map(|(_, value)| value.as_str())
    }

    /// The value of a parameter that may be given once.
    pub(super) fn single(&self, name: &str) -> Result<Option<&str>, String> {
        let mut values = self.values(name);
        let first = values.next();
        match values.count() {
            0 => Ok(first),
            more => Err(format!("query parameter '{name}' is given {} times; give it once", more + 1)),
        }
    }

    /// A parameter given at most once, parsed; `expected` says what it should be.
    pub(super) fn parsed<T>(&self, name: &str, expected: &str) -> Result<Option<T>, String>
    where
        T: FromStr,
        T::Err: Display,
    {
        match self.single(name)? {
            None => Ok(None),
            Some(text) => text.parse().map(Some).map_err(|e| format!("query parameter '{name}': {e} ('{}'); expected {expected}", crate::api_error::excerpt(text, 32))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_decoded_and_repeats_are_counted() {
        let query = QueryParams::parse("symbols=A%2CB&symbols=C+D&limit=5&limit=6&x");
        assert_eq!(query.values("symbols").collect::<Vec<_>>(), ["A,B", "C D"]);
        assert_eq!(query.single("symbols").unwrap_err(), "query parameter 'symbols' is given 2 times; give it once");
        assert_eq!(query.single("x"), Ok(Some("")));
        assert_eq!(query.single("absent"), Ok(None));
        assert!(query.parsed::<usize>("limit", "a number").unwrap_err().contains("'limit' is given 2 times"));
    }

    #[test]
    fn parse_errors_name_the_parameter_and_its_value() {
        let query = QueryParams::parse("limit=-1&ok=7");
        assert_eq!(query.parsed::<usize>("limit", "a whole number").unwrap_err(), "query parameter 'limit': invalid digit found in string ('-1'); expected a whole number");
        assert_eq!(query.parsed::<usize>("ok", "a whole number"), Ok(Some(7)));
        assert_eq!(QueryParams::parse("a=%FF").single("a"), Ok(Some("\u{FFFD}")));
    }
}
