//! Manifests: load (files -> resources), validate, compile (resources -> plan).
