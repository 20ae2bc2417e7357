//! HELPER-C: implement.
fn main() {}
