//! Group commit: many concurrent callers' small writes of one kind (transfers starting, window
//! commits) become one database transaction, so a busy worker pays one round trip and one WAL
//! flush per group instead of per connection, while an idle one adds no delay (a lone request
//! is a group of one, started at once).
//!
//! No background task: a caller queues its request and then competes for one of a few
//! *slots*; whoever gets a slot takes the queue (oldest first, at most `max`) and runs it as
//! one group on its own task. While a group runs, new requests pile up and become the next
//! group: the busier the worker, the bigger the groups. A group runs to its end even if the
//! caller that started it is cancelled (as [`super::connections::detached`] does for single
//! transactions). Each request carries its own reply channel; a caller cancelled while its
//! request waits leaves it to be run by the next group, like a single commit whose caller went
//! away after sending it.

use std::sync::{Arc, Mutex};

use tokio::sync::{Semaphore, oneshot};

/// A queue of pending requests of one kind and the slots that run them.
pub(super) struct GroupCommit<T> {
    queue: Mutex<Vec<T>>,
    slots: Arc<Semaphore>,
    total_slots: usize,
    max: usize,
}

impl<T: Send + 'static> GroupCommit<T> {
    /// `slots` groups may run at once (SQLite has one writer: 1); a group holds at most `max`
    /// requests.
    pub(super) fn new(slots: usize, max: usize) -> Self {
        Self {
            queue: Mutex::new(Vec::new()),
            slots: Arc::new(Semaphore::new(slots.max(1))),
            total_slots: slots.max(1),
            max: max.max(1),
        }
    }

    /// Queues `item` (which holds the sending half of `reply`) and waits for its answer,
    /// running groups with `run` whenever this caller gets a slot. `None`: the group that took
    /// the request ended without answering it (a panic in `run`).
    pub(super) async fn submit<R, F, Fut>(
        &self,
        item: T,
        mut reply: oneshot::Receiver<R>,
        run: F,
    ) -> Option<R>
    where
        F: Fn(Vec<T>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.lock().push(item);
        loop {
            tokio::select! {
                biased;
                answer = &mut reply => return answer.ok(),
                permit = self.slots.clone().acquire_owned() => {
                    let Ok(permit) = permit else {
                        return reply.await.ok();
                    };
                    let group: Vec<T> = {
                        let mut queue = self.lock();
                        let n = queue.len().min(self.max);
                        queue.drain(..n).collect()
                    };
                    if group.is_empty() {
                        // Our request is in a running group: wait for its answer.
                        drop(permit);
                        return reply.await.ok();
                    }
                    let work = run(group);
                    tokio::spawn(async move {
                        work.await;
                        drop(permit);
                    });
                }
            }
        }
    }

    /// Requests waiting for a slot.
    pub(super) fn queued(&self) -> usize {
        self.lock().len()
    }

    /// Groups that may run at once.
    pub(super) fn slots(&self) -> usize {
        self.total_slots
    }

    /// Slots running a group right now.
    pub(super) fn running(&self) -> usize {
        self.total_slots - self.slots.available_permits()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<T>> {
        // A panic while holding the lock cannot leave the vector half-changed (push, drain).
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::atomic::{AtomicUsize, Ordering},
        time::Duration,
    };

    use super::*;

    struct Req {
        n: u32,
        reply: oneshot::Sender<u32>,
    }

    fn runner(
        groups: Arc<Mutex<Vec<usize>>>,
        running: Arc<AtomicUsize>,
        peak: Arc<AtomicUsize>,
    ) -> impl Fn(Vec<Req>) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> {
        move |group: Vec<Req>| {
            let (groups, running, peak) = (groups.clone(), running.clone(), peak.clone());
            Box::pin(async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                groups.lock().unwrap().push(group.len());
                tokio::time::sleep(Duration::from_millis(20)).await;
                for r in group {
                    let _ = r.reply.send(r.n * 2);
                }
                running.fetch_sub(1, Ordering::SeqCst);
            })
        }
    }

    #[tokio::test]
    async fn concurrent_requests_share_groups_and_each_gets_its_own_answer() {
        let gc = Arc::new(GroupCommit::new(1, 8));
        let (groups, running, peak) = Default::default();
        let run = runner(Arc::clone(&groups), Arc::clone(&running), Arc::clone(&peak));
        let run = Arc::new(run);
        let mut tasks = Vec::new();
        for n in 0..40u32 {
            let (gc, run) = (gc.clone(), run.clone());
            tasks.push(tokio::spawn(async move {
                let (tx, rx) = oneshot::channel();
                gc.submit(Req { n, reply: tx }, rx, |g| run(g)).await
            }));
        }
        for (n, task) in tasks.into_iter().enumerate() {
            assert_eq!(task.await.unwrap(), Some(n as u32 * 2));
        }
        let groups = groups.lock().unwrap().clone();
        assert_eq!(groups.iter().sum::<usize>(), 40, "every request ran once");
        assert!(
            groups.iter().all(|&g| g <= 8),
            "groups respect max: {groups:?}"
        );
        assert!(groups.len() < 40, "requests were grouped: {groups:?}");
        assert_eq!(
            peak.load(Ordering::SeqCst),
            1,
            "one slot, one group at a time"
        );
    }

    #[tokio::test]
    async fn a_lone_request_runs_at_once_and_slots_bound_parallel_groups() {
        let gc = Arc::new(GroupCommit::new(2, 1));
        let (groups, running, peak) = Default::default();
        let run = Arc::new(runner(groups, running, Arc::clone(&peak)));
        let (tx, rx) = oneshot::channel();
        assert_eq!(
            gc.submit(Req { n: 5, reply: tx }, rx, |g| run(g)).await,
            Some(10)
        );
        let mut tasks = Vec::new();
        for n in 0..10u32 {
            let (gc, run) = (gc.clone(), run.clone());
            tasks.push(tokio::spawn(async move {
                let (tx, rx) = oneshot::channel();
                gc.submit(Req { n, reply: tx }, rx, |g| run(g)).await
            }));
        }
        for task in tasks {
            assert!(task.await.unwrap().is_some());
        }
        assert_eq!(
            peak.load(Ordering::SeqCst),
            2,
            "two slots run two groups at once"
        );
    }

    #[tokio::test]
    async fn a_cancelled_caller_leaves_its_request_to_the_next_group() {
        let gc = Arc::new(GroupCommit::new(1, 8));
        let (groups, running, peak) = Default::default();
        let run = Arc::new(runner(Arc::clone(&groups), running, peak));
        // Hold the slot with a first request, queue a second and cancel its caller.
        let first = {
            let (gc, run) = (gc.clone(), run.clone());
            tokio::spawn(async move {
                let (tx, rx) = oneshot::channel();
                gc.submit(Req { n: 1, reply: tx }, rx, |g| run(g)).await
            })
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        let (tx2, rx2) = oneshot::channel();
        let cancelled = {
            let (gc, run) = (gc.clone(), run.clone());
            tokio::spawn(async move {
                // The answer goes to `rx2` (held by the test); this caller waits on a channel
                // that never answers until it is cancelled.
                let (_keep, never) = oneshot::channel::<u32>();
                gc.submit(Req { n: 2, reply: tx2 }, never, |g| run(g)).await
            })
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        cancelled.abort();
        assert_eq!(first.await.unwrap(), Some(2));
        // The next caller's group takes the orphaned request along with its own.
        let (tx, rx) = oneshot::channel();
        assert_eq!(
            gc.submit(Req { n: 3, reply: tx }, rx, |g| run(g)).await,
            Some(6)
        );
        assert_eq!(rx2.await.unwrap(), 4, "the orphaned request ran");
        assert_eq!(groups.lock().unwrap().iter().sum::<usize>(), 3);
    }
}
