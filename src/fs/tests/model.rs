//! A reference model of the namespace and reads (placeholder; being written).
