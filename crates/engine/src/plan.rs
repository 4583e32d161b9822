//! `plan`: how many pages each scheme re-renders per event, simulated on a
//! dataset. Pure and seeded: the same input gives the same table.

use std::collections::BTreeMap;
use std::sync::Arc;

use sesame_config::{Config, ListingRoute, Order, PathPattern, Placeholder, Route, RouteKind, Scheme};
use sesame_model::{Change, DocKey, Document, Status};
use sesame_site::{PageId, Site, SiteState};

use crate::{Event, Progress};

/// One row of the table: a route family under one scheme.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanRow {
    /// The route (its name) or `documents` / `sitemap`.
    pub family: String,
    /// The scheme variant, e.g. `stable` or `offset, hot > 1000`.
    pub scheme: String,
    /// Pages the family has at the start.
    pub total: u64,
    /// Pages re-rendered per event: min, median, p99, max.
    pub per_event: [u64; 4],
}

/// A listing route as one scheme variant, under its own path prefix.
fn variant(
    index: usize,
    route: &Route,
    listing: &ListingRoute,
    scheme: Scheme,
    hot: Option<u32>,
) -> Option<(Route, String)> {
    let label = match (scheme, hot) {
        (Scheme::Offset, Some(t)) => format!("offset, hot > {t}"),
        (s, _) => s.to_string(),
    };
    let mut l = listing.clone();
    l.scheme = scheme;
    l.hot_threshold = hot;
    if matches!(scheme, Scheme::Stable | Scheme::Date) {
        l.order = Order::Newest;
    }
    let allowed: &[Placeholder] = if l.group_by.is_some() { &[Placeholder::Group] } else { &[] };
    l.path = PathPattern::parse(&format!("/plan-{index}{}", listing.path), allowed).ok()?;
    let name = format!("{} [{label}]", route.name);
    Some((Route { name, kind: RouteKind::Listing(l) }, label))
}

/// The configuration to simulate: the collection's document routes, every
/// listing route of it once per applicable scheme, and the sitemap.
fn variants(config: &Config, collection: &str) -> (Config, BTreeMap<String, (String, String)>) {
    let mut out = config.clone();
    out.routes.clear();
    let mut labels = BTreeMap::new();
    let has_date = config.collections.get(collection).is_some_and(|c| c.date.is_some());
    for route in &config.routes {
        match &route.kind {
            RouteKind::Document(d) if d.collection == collection => out.routes.push(route.clone()),
            RouteKind::Sitemap(_) => out.routes.push(route.clone()),
            RouteKind::Listing(l) if l.collection == collection => {
                let mut schemes = vec![(Scheme::Offset, None)];
                if l.hot_threshold.is_some() {
                    schemes.push((Scheme::Offset, l.hot_threshold));
                }
                schemes.push((Scheme::Stable, None));
                if has_date {
                    schemes.push((Scheme::Date, None));
                }
                schemes.push((Scheme::Head, None));
                for (scheme, hot) in schemes {
                    if let Some((v, label)) = variant(out.routes.len(), route, l, scheme, hot) {
                        labels.insert(v.name.clone(), (route.name.clone(), label));
                        out.routes.push(v);
                    }
                }
            }
            _ => {}
        }
    }
    (out, labels)
}

fn stats(mut counts: Vec<u64>) -> [u64; 4] {
    if counts.is_empty() {
        return [0; 4];
    }
    counts.sort_unstable();
    let at = |q: f64| counts[((counts.len() - 1) as f64 * q).round() as usize];
    [counts[0], at(0.5), at(0.99), counts[counts.len() - 1]]
}

/// Simulates `events` random events (half adds, a quarter takedowns, a
/// quarter edits, a third of which also retag) on `docs` of `collection`,
/// one event per batch, and tabulates the pages each route family re-renders.
/// Also returns the events, so that the same workload can be applied for real.
pub fn plan(
    config: &Config,
    collection: &str,
    docs: Vec<Document>,
    events: usize,
    seed: u64,
    progress: &dyn Progress,
) -> (Vec<PlanRow>, Vec<Event>) {
    let (config, labels) = variants(config, collection);
    let site = Site::new(config);
    let date_field = site.collection(collection).date.clone();
    let title_field = site.collection(collection).title.clone();
    let tags_field = site.collection(collection).tags.clone();
    let newest_date =
        date_field.as_deref().and_then(|f| docs.iter().filter_map(|d| d.data.get_str(f)).max().map(|d| d.into_owned()));
    let mut next_id = docs.iter().filter_map(|d| d.key.id.parse::<u64>().ok()).max().unwrap_or(0) + 1;
    let mut live: Vec<DocKey> = docs.iter().filter(|d| d.status == Status::Live).map(|d| d.key.clone()).collect();
    live.sort();
    let (mut state, _) = SiteState::load(site.clone(), docs, [], []);

    let family = |id: &PageId| -> String {
        match id {
            PageId::DocPath(_) => "documents".into(),
            PageId::Listing { route, .. } => site.route_name(*route).to_string(),
            _ => "sitemap".into(),
        }
    };
    let mut totals: BTreeMap<String, u64> = BTreeMap::new();
    for id in state.all_pages() {
        *totals.entry(family(&id)).or_default() += 1;
    }
    let mut counts: BTreeMap<String, Vec<u64>> =
        totals.keys().map(|k| (k.clone(), Vec::with_capacity(events))).collect();

    let mut emitted = Vec::with_capacity(events);
    let mut rng = fastrand::Rng::with_seed(seed);
    progress.stage("simulating", events as u64);
    for i in 0..events {
        let roll = rng.u8(0..100);
        let Some(pick) = (!live.is_empty()).then(|| rng.usize(0..live.len())) else { break };
        let template = state.doc(&live[pick]).cloned().expect("live documents are published");
        let change = if roll < 50 {
            let mut doc = (*template).clone();
            doc.key = DocKey::new(collection, next_id.to_string());
            next_id += 1;
            doc.status = Status::Live;
            if let (Some(f), Some(d)) = (&date_field, &newest_date) {
                doc.data.set(f, d.clone().into());
            }
            live.push(doc.key.clone());
            doc
        } else if roll < 75 {
            let mut doc = (*template).clone();
            doc.status = Status::Removed;
            live.swap_remove(pick);
            doc
        } else {
            let mut doc = (*template).clone();
            if let Some(f) = &title_field {
                doc.data.set(f, format!("Edited {i}").into());
            }
            if roll >= 92
                && let Some(f) = &tags_field
                && let Some(other) = state.doc(&live[rng.usize(0..live.len())])
            {
                let tags = other.data.get(f).unwrap_or_default();
                doc.data.set(f, tags);
            }
            doc
        };
        let id = serde_json::Value::from(change.key.id.to_string());
        emitted.push(match change.status {
            Status::Removed => Event::Takedown { collection: collection.to_string(), id },
            Status::Live => Event::Upsert { collection: collection.to_string(), id, doc: change.data.to_map() },
        });
        let applied = state.apply(&[Change { key: change.key.clone(), new: Some(Arc::new(change)) }]);
        let mut per: BTreeMap<String, u64> = BTreeMap::new();
        for id in &applied.candidates {
            if state.exists(id) {
                *per.entry(family(id)).or_default() += 1;
            }
        }
        for (k, v) in counts.iter_mut() {
            v.push(per.get(k).copied().unwrap_or(0));
        }
        progress.advance(1);
    }
    progress.finish();

    let rows = counts
        .into_iter()
        .map(|(name, c)| {
            let (family, scheme) = labels.get(&name).cloned().unwrap_or_else(|| (name.clone(), "-".into()));
            PlanRow { family, scheme, total: totals.get(&name).copied().unwrap_or(0), per_event: stats(c) }
        })
        .collect();
    (rows, emitted)
}
