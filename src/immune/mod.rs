//! The immune core: pure, synchronous, deterministic. Every function takes
//! the time it needs as an argument; effects leave as values (events).

pub mod action;
pub mod event;
pub mod vitals;
