//! mha-macros
