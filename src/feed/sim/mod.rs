//! The simulated feed (runtime). The model lives in [`model`].
pub mod model;
