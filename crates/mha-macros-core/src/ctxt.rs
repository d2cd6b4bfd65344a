//! Collects every error of one expansion, so that the user sees them all at once.

use std::cell::RefCell;
use std::fmt::Display;

use proc_macro2::Span;

/// The error collector of one macro call (serde_derive's `Ctxt`): checks push errors with the
/// user's spans and go on; [`Ctxt::check`] hands back all of them combined.
#[derive(Default)]
pub struct Ctxt {
    errors: RefCell<Vec<syn::Error>>,
}

impl Ctxt {
    /// An empty collector.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records an error at `span`.
    pub fn error_spanned(&self, span: Span, message: impl Display) {
        self.errors
            .borrow_mut()
            .push(syn::Error::new(span, message));
    }

    /// Records an error spanning `tokens` (from their first to their last token).
    pub fn error_spanned_by(&self, tokens: impl quote::ToTokens, message: impl Display) {
        self.errors
            .borrow_mut()
            .push(syn::Error::new_spanned(tokens, message));
    }

    /// Records a syntax error.
    pub fn syn_error(&self, error: syn::Error) {
        self.errors.borrow_mut().push(error);
    }

    /// Whether an error was recorded.
    pub fn has_errors(&self) -> bool {
        !self.errors.borrow().is_empty()
    }

    /// `Ok` when no error was recorded, else all of them combined into one `syn::Error`.
    pub fn check(self) -> Result<(), syn::Error> {
        let mut errors = self.errors.into_inner().into_iter();
        let Some(mut combined) = errors.next() else {
            return Ok(());
        };
        for error in errors {
            combined.combine(error);
        }
        Err(combined)
    }
}
