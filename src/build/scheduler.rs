//! A dependency queue (after cargo's): a node is handed out when nothing it
//! needs is pending; finishing one releases its dependents; the first
//! failure stops handing out work and is returned once running work ends.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Condvar, Mutex};

use crate::graph::StageId;

struct Queue<E> {
    /// Unfinished dependencies of every node not yet handed out.
    waiting: HashMap<StageId, BTreeSet<StageId>>,
    ready: VecDeque<StageId>,
    running: usize,
    failure: Option<E>,
}

/// Runs `work` on every node of `deps` (node → what it needs), at most `jobs` at once.
pub fn run<E: Send>(
    deps: HashMap<StageId, BTreeSet<StageId>>,
    jobs: usize,
    work: impl Fn(StageId) -> Result<(), E> + Sync,
) -> Result<(), E> {
    let mut ready: Vec<StageId> = deps.iter().filter(|(_, d)| d.is_empty()).map(|(id, _)| *id).collect();
    ready.sort();
    let waiting = deps.into_iter().filter(|(_, d)| !d.is_empty()).collect();
    let queue = Mutex::new(Queue { waiting, ready: ready.into(), running: 0, failure: None });
    let wakeup = Condvar::new();
    let worker = || {
        loop {
            let node = {
                let mut q = queue.lock().unwrap_or_else(|p| p.into_inner());
                loop {
                    if q.failure.is_some() {
                        return;
                    }
                    if let Some(node) = q.ready.pop_front() {
                        q.running += 1;
                        break node;
                    }
                    if q.running == 0 {
                        // Nothing runs and nothing is ready: done (or only unreachable nodes remain).
                        wakeup.notify_all();
                        return;
                    }
                    q = wakeup.wait(q).unwrap_or_else(|p| p.into_inner());
                }
            };
            let result = work(node);
            let mut q = queue.lock().unwrap_or_else(|p| p.into_inner());
            q.running -= 1;
            match result {
                Ok(()) => {
                    let mut released: Vec<StageId> = Vec::new();
                    for (id, needs) in q.waiting.iter_mut() {
                        if needs.remove(&node) && needs.is_empty() {
                            released.push(*id);
                        }
                    }
                    released.sort();
                    for id in released {
                        q.waiting.remove(&id);
                        q.ready.push_back(id);
                    }
                }
                Err(e) => {
                    if q.failure.is_none() {
                        q.failure = Some(e);
                    }
                }
            }
            wakeup.notify_all();
        }
    };
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(worker);
        }
    });
    match queue.into_inner().unwrap_or_else(|p| p.into_inner()).failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn deps(edges: &[(usize, &[usize])]) -> HashMap<StageId, BTreeSet<StageId>> {
        edges.iter().map(|(n, d)| (StageId(*n), d.iter().map(|x| StageId(*x)).collect())).collect()
    }

    #[test]
    fn runs_each_node_after_its_dependencies() {
        let order = Mutex::new(Vec::new());
        run::<()>(deps(&[(0, &[]), (1, &[0]), (2, &[0]), (3, &[1, 2])]), 2, |id| {
            order.lock().unwrap().push(id.0);
            Ok(())
        })
        .unwrap();
        let order = order.into_inner().unwrap();
        let pos = |n| order.iter().position(|x| *x == n).unwrap();
        assert_eq!(order.len(), 4);
        assert!(pos(0) < pos(1) && pos(0) < pos(2) && pos(1) < pos(3) && pos(2) < pos(3));
    }

    #[test]
    fn independent_nodes_run_at_the_same_time() {
        let running = AtomicUsize::new(0);
        let peak = AtomicUsize::new(0);
        run::<()>(deps(&[(0, &[]), (1, &[])]), 2, |_| {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            let start = std::time::Instant::now();
            while peak.load(Ordering::SeqCst) < 2 && start.elapsed() < std::time::Duration::from_secs(5) {
                std::thread::yield_now();
            }
            running.fetch_sub(1, Ordering::SeqCst);
            Ok(())
        })
        .unwrap();
        assert_eq!(peak.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_failure_stops_dependents() {
        let ran = Mutex::new(Vec::new());
        let result = run(deps(&[(0, &[]), (1, &[0])]), 1, |id| {
            ran.lock().unwrap().push(id.0);
            if id.0 == 0 { Err("boom") } else { Ok(()) }
        });
        assert_eq!(result, Err("boom"));
        assert_eq!(ran.into_inner().unwrap(), vec![0]);
    }
}
