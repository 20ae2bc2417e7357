//! HELPER-A: implement.
