#![allow(unsafe_code)]
//! Live heap of the router's parts on a built project, by a counting
//! allocator: `cargo run --release -p sesame-bench --example router_heap -- DIR`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn mb() -> f64 {
    LIVE.load(Ordering::Relaxed) as f64 / 1e6
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let dir = std::env::args().nth(1).expect("a project directory");
    let project = Arc::new(sesame_engine::Project::open(std::path::Path::new(&dir)).await.expect("project"));
    println!("project open: {:.1} MB", mb());
    let before = mb();
    let (_, table) = sesame_engine::manifest::published(&project).await.expect("the published table");
    println!("{} paths of the manifest read as pointers: +{:.1} MB", table.len(), mb() - before);
    let text = |f: fn(&sesame_store::Pointer) -> usize| table.values().map(f).sum::<usize>() as f64 / 1e6;
    let (deps, paths) = (text(|p| p.deps.as_str().len()), text(|p| p.path.len()));
    println!("  of which the text of their dependency keys {deps:.1} MB, of their paths {paths:.1} MB");
    drop(table);
    let before = mb();
    let router = sesame_router::Router::load(
        project.store.clone(),
        project.objects.clone(),
        sesame_router::RouterConfig::default(),
        None,
    )
    .await
    .expect("router");
    println!("router table of {} paths: +{:.1} MB", router.len(), mb() - before);
    let before = mb();
    let snapshot = project.store.published_snapshot().await.expect("snapshot");
    println!("{} published documents read: +{:.1} MB", snapshot.docs.len(), mb() - before);
    let site = project.site.clone();
    let (docs, seqs, aliases) = (snapshot.docs, snapshot.seqs, snapshot.aliases);
    let with_seqs = mb();
    let n_seqs = seqs.len();
    drop(seqs);
    println!("  of which {n_seqs} sequence numbers {:.1} MB", with_seqs - mb());
    // As the router loads it: the documents alone.
    let narrowed = sesame_site::SiteState::load(site.for_pages_on_request(), docs.clone(), [], []).0;
    println!("the site model narrowed to head listings over them: +{:.1} MB", mb() - with_seqs);
    drop(narrowed);
    let before_whole = mb();
    let state = sesame_site::SiteState::load(site, docs, [], aliases).0;
    println!("the whole site model over them (no sequence numbers): +{:.1} MB", mb() - before_whole);
    drop(state);
    let before = mb();
    let on_demand = sesame_engine::OnDemand::load(&project, 0).await.expect("on demand");
    println!("pages on request (the site model narrowed to head listings): +{:.1} MB", mb() - before);
    drop((router, on_demand));
}
