//! HELPER-B: the simulation model (see feed/sim/mod.rs for the runtime that drives it).
