//! Pure statistics over `TurnRecord`s (filled in by the analysis work).
