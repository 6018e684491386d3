//! Dedicated extraction threads, optionally at a lower CPU priority (a higher nice value)
//! than the request handlers, so extraction yields the CPU to the write path under load.
//! They are separate from tokio's blocking pool so request work never inherits the niceness.

use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};

type Task = Box<dyn FnOnce() + Send>;

/// A fixed set of threads running submitted tasks.
pub struct ThreadPool {
    tasks: Sender<Task>,
}

impl ThreadPool {
    /// Starts `threads` threads at nice value `nice` (0 keeps the process's priority).
    pub fn start(threads: usize, nice: i32) -> std::io::Result<Self> {
        let (tasks, queue) = channel::<Task>();
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..threads {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("memd-extract-{i}"))
                .spawn(move || {
                    crate::priority::lower_current_thread(nice, "extraction");
                    work(&queue);
                })?;
        }
        Ok(Self { tasks })
    }

    /// Runs `task` on the next free thread.
    pub fn run(&self, task: impl FnOnce() + Send + 'static) {
        // The threads live as long as the pool's sender, so this cannot fail.
        let _ = self.tasks.send(Box::new(task));
    }
}

fn work(queue: &Mutex<Receiver<Task>>) {
    loop {
        let next = queue.lock().unwrap_or_else(|p| p.into_inner()).recv();
        match next {
            Ok(task) => task(),
            // The pool was dropped: the server is stopping.
            Err(_) => return,
        }
    }
}
