//! Inputs fuzzing once crashed on, kept so the bug stays fixed.
