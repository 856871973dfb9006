//! Exporters: where data and events leave the pipeline.
