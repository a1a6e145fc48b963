//! Acks gathered into one: a `multiple` ack settles every delivery of the
//! channel up to the one it names, so a consumer that has applied a run of
//! deliveries in order acks them with one frame instead of one each. On a
//! quorum queue each ack frame is a Raft command the broker writes to its
//! log, so at a steady trickle of events this halves the broker's work per
//! event (measured in docs/benchmarks.md, "what profiling found").
//!
//! The rule that keeps it safe: a delivery is [`Acks::push`]ed only once it
//! is applied, and every earlier delivery of the channel is either pushed
//! too or already settled on its own (nacked, dead-lettered). A consumer
//! that still holds an earlier delivery unsettled (say, one it will requeue
//! after a pause) acks the later ones singly until then
//! ([`Acks::ack_alone`]), since a `multiple` ack would settle the held one
//! as well. A crash before the ack only means the broker redelivers the
//! run, which consumers apply as no-ops.

use std::time::Duration;

use lapin::{Acker, options::BasicAckOptions};

use crate::{BusError, timed};

/// How long applied deliveries wait for company before their ack goes.
pub const ACK_IDLE: Duration = Duration::from_millis(10);

/// The applied deliveries not acked yet, as the newest one's acker.
#[derive(Debug)]
pub struct Acks {
    newest: Option<Acker>,
    count: u32,
    every: u32,
}

impl Acks {
    /// Acks go when `every` deliveries are waiting (at least 1), or when
    /// the consumer flushes on idle. Keep `every` below the prefetch, or the
    /// broker stops delivering until the idle flush.
    pub fn new(every: u32) -> Self {
        Self {
            newest: None,
            count: 0,
            every: every.max(1),
        }
    }

    /// Adds an applied delivery; acks the lot if the batch is full.
    pub async fn push(&mut self, acker: Acker) -> Result<(), BusError> {
        self.newest = Some(acker);
        self.count += 1;
        if self.count >= self.every {
            self.flush().await?;
        }
        Ok(())
    }

    /// Whether anything waits to be acked (the consumer's idle timer runs
    /// only then).
    pub fn is_pending(&self) -> bool {
        self.newest.is_some()
    }

    /// Acks everything waiting, in one frame.
    pub async fn flush(&mut self) -> Result<(), BusError> {
        self.count = 0;
        let Some(acker) = self.newest.take() else {
            return Ok(());
        };
        timed("acking", acker.ack(BasicAckOptions { multiple: true }))
            .await
            .map(drop)
    }

    /// Acks one delivery by itself, after flushing what waits (which is all
    /// earlier): for a consumer that holds an earlier delivery unsettled.
    pub async fn ack_alone(&mut self, acker: &Acker) -> Result<(), BusError> {
        self.flush().await?;
        timed("acking", acker.ack(BasicAckOptions::default()))
            .await
            .map(drop)
    }
}
