//! Metrics recorded by the engine (exported by whoever installs a recorder,
//! e.g. `sesame serve` at `/metrics`). Names are documented in the README.

use sesame_store::PendingEvent;

use crate::Stats;

/// Records a committed batch.
pub(crate) fn published(stats: &Stats, events: &[PendingEvent]) {
    metrics::counter!("sesame_batches_total").increment(1);
    metrics::counter!("sesame_events_published_total").increment(stats.events);
    metrics::counter!("sesame_events_coalesced_total").increment(stats.events.saturating_sub(stats.documents));
    metrics::counter!("sesame_pages_planned_total").increment(stats.planned);
    metrics::counter!("sesame_pages_rendered_total").increment(stats.rendered);
    metrics::counter!("sesame_pages_changed_total").increment(stats.changed);
    metrics::counter!("sesame_objects_written_total").increment(stats.objects);
    metrics::counter!("sesame_bytes_written_total").increment(stats.bytes);
    metrics::histogram!("sesame_batch_seconds").record(stats.seconds);
    metrics::gauge!("sesame_generation").set(stats.generation as f64);
    let now = sesame_model::time::now_ms();
    for e in events {
        if e.accepted > 0 {
            metrics::histogram!("sesame_publish_latency_seconds").record((now - e.accepted).max(0) as f64 / 1000.0);
        }
    }
}
