//! Group commit above openraft. openraft 0.9 appends and flushes each client write on its own
//! (its core loop awaits the flush of one entry before it takes the next), so the leader packs
//! the commands that arrive while earlier entries are being persisted into one log entry.
//!
//! The `write-batcher` task takes the first waiting command, then an in-flight permit, and only
//! then drains the queue: while [`MAX_ENTRIES_IN_FLIGHT`] entries are being written and
//! replicated, new commands wait and go out together in the next entry. A lone command goes
//! out at once.

use std::sync::Arc;

use fleet_core::{CoreError, Outcome};
use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};

pub use crate::limits::{
    MAX_COMMANDS_PER_ENTRY, MAX_ENTRIES_IN_FLIGHT, MAX_ENTRIES_PER_APPEND, MAX_ENTRY_BYTES,
    MAX_QUEUED_COMMANDS,
};
use crate::types::{Proposal, ProposalItem, Raft};
use fleet_api::tasks::spawn_named;

/// Why a batched write did not apply.
#[derive(Debug)]
pub enum BatchError {
    /// This node is not the leader; the entry was not appended.
    NotLeader,
    /// The command was applied and refused by the domain.
    Refused(CoreError),
    /// Raft failed the entry.
    Raft(String),
}

type Reply = oneshot::Sender<Result<(u64, Outcome), BatchError>>;

struct Queued {
    item: ProposalItem,
    /// The item's JSON size, as it will be in the entry.
    bytes: usize,
    reply: Reply,
}

/// The handle writers use to enqueue commands on the leader.
#[derive(Clone)]
pub struct Batcher {
    queue: mpsc::Sender<Queued>,
    hold: watch::Sender<bool>,
    in_flight: Arc<Semaphore>,
}

impl Batcher {
    /// Starts the `write-batcher` task for `raft`.
    pub fn start(raft: Raft) -> Self {
        let (queue, pending) = mpsc::channel(MAX_QUEUED_COMMANDS);
        let (hold, held) = watch::channel(false);
        let in_flight = Arc::new(Semaphore::new(MAX_ENTRIES_IN_FLIGHT));
        spawn_named("write-batcher", run(raft, pending, held, in_flight.clone()));
        Batcher {
            queue,
            hold,
            in_flight,
        }
    }

    /// Holds new entries back (commands queue up) and waits until every entry already
    /// proposed has finished, so the log stops growing. A leader holds while it hands
    /// leadership over, so the successor's log can become as long as its own.
    pub async fn hold(&self) {
        self.hold.send_replace(true);
        let all = self
            .in_flight
            .acquire_many(MAX_ENTRIES_IN_FLIGHT as u32)
            .await
            .expect("the semaphore is never closed");
        drop(all);
    }

    /// Lets held commands go out; they fail with `NotLeader` if leadership moved meanwhile.
    pub fn release(&self) {
        self.hold.send_replace(false);
    }

    /// Proposes one command and waits until its entry is applied.
    ///
    /// # Cancel safety
    /// Dropping the future does not withdraw the command: once queued it is proposed, and its
    /// result is discarded.
    pub async fn write(&self, item: ProposalItem) -> Result<(u64, Outcome), BatchError> {
        let bytes = item_bytes(&item);
        if bytes > MAX_ENTRY_BYTES {
            return Err(BatchError::Refused(CoreError::InvalidArgument {
                field: "command".into(),
                message: format!(
                    "the command is {bytes} bytes as stored, over the limit of {MAX_ENTRY_BYTES} \
                     bytes per log entry"
                ),
                hint: "send less in one request (fewer objects or reports, shorter texts)".into(),
            }));
        }
        let (reply, result) = oneshot::channel();
        self.queue
            .send(Queued { item, bytes, reply })
            .await
            .map_err(|_| BatchError::Raft("the write batcher has stopped".into()))?;
        result
            .await
            .map_err(|_| BatchError::Raft("the write batcher dropped the command".into()))?
    }
}

/// # Cancel safety
/// Runs until every [`Batcher`] is dropped.
async fn run(
    raft: Raft,
    mut pending: mpsc::Receiver<Queued>,
    mut held: watch::Receiver<bool>,
    in_flight: Arc<Semaphore>,
) {
    // A command that did not fit the last entry; it opens the next one.
    let mut carried: Option<Queued> = None;
    loop {
        let first = match carried.take() {
            Some(first) => first,
            None => match pending.recv().await {
                Some(first) => first,
                None => return,
            },
        };
        // A permit is taken only while no hold is on, and a hold that begins after the check
        // waits for this permit (see `Batcher::hold`): no entry slips past a hold.
        let permit = loop {
            if held.wait_for(|on| !*on).await.is_err() {
                return;
            }
            let permit = in_flight
                .clone()
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            if !*held.borrow() {
                break permit;
            }
        };
        let batch = pack(first, &mut pending, &mut carried);
        let raft = raft.clone();
        spawn_named("write-entry", async move {
            let (items, replies): (Vec<_>, Vec<_>) =
                batch.into_iter().map(|q| (q.item, q.reply)).unzip();
            let commands = items.len();
            let result = raft.client_write(Proposal { items }).await;
            drop(permit);
            match result {
                Ok(response) => {
                    let index = response.log_id.index;
                    let results = response.data.0;
                    assert_eq!(results.len(), commands, "one result per command");
                    for (reply, result) in replies.into_iter().zip(results) {
                        let _ = reply.send(result.map(|o| (index, o)).map_err(BatchError::Refused));
                    }
                }
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                    for reply in replies {
                        let _ = reply.send(Err(BatchError::NotLeader));
                    }
                }
                Err(e) => {
                    let text = e.to_string();
                    for reply in replies {
                        let _ = reply.send(Err(BatchError::Raft(text.clone())));
                    }
                }
            }
        });
    }
}

/// The JSON size of `item` in an entry.
fn item_bytes(item: &ProposalItem) -> usize {
    serde_json::to_vec(item)
        .expect("proposal items serialize")
        .len()
}

/// One entry's commands: `first`, then what waits in `pending`, up to
/// [`MAX_COMMANDS_PER_ENTRY`] commands and [`MAX_ENTRY_BYTES`] bytes (counted as the items'
/// JSON plus a separator each). A command that would take the entry over the bytes is left in
/// `carried` for the next entry. Takes only what is already queued; never waits.
fn pack(
    first: Queued,
    pending: &mut mpsc::Receiver<Queued>,
    carried: &mut Option<Queued>,
) -> Vec<Queued> {
    // `{"items":[` and `]}`.
    let mut bytes = ENTRY_FRAMING_BYTES + first.bytes;
    let mut batch = vec![first];
    while batch.len() < MAX_COMMANDS_PER_ENTRY {
        let Ok(next) = pending.try_recv() else {
            break;
        };
        if bytes + 1 + next.bytes > MAX_ENTRY_BYTES {
            *carried = Some(next);
            break;
        }
        bytes += 1 + next.bytes;
        batch.push(next);
    }
    batch
}

/// The bytes of an entry's JSON around its items: `{"items":[` and `]}`.
const ENTRY_FRAMING_BYTES: usize = 12;

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use fleet_core::limits::*;
    use fleet_core::{Command, Context, State};

    use super::*;

    /// Every string at its limit, of `"` where allowed so that JSON escaping doubles it.
    fn largest_valid_items() -> Vec<ProposalItem> {
        let quotes = |n: usize| "\"".repeat(n);
        let name = |c: char| c.to_string().repeat(MAX_NAME_LEN);
        let context = Context {
            now_ms: u64::MAX,
            actor: quotes(MAX_ACTOR_LEN),
            reason: quotes(MAX_REASON_LEN),
        };
        let labels: BTreeMap<String, String> = (0..MAX_LABELS_PER_CLUSTER)
            .map(|i| (format!("{i:0>63}"), "v".repeat(MAX_LABEL_VALUE_LEN)))
            .collect();
        let commands = [
            Command::RegisterCluster {
                name: name('c'),
                site: name('s'),
                environment: "staging".into(),
                labels,
            },
            Command::CreateWorkload {
                name: name('w'),
                repo_url: format!("https://{}", quotes(MAX_REPO_URL_LEN - 8)),
                path_template: quotes(MAX_PATH_TEMPLATE_LEN),
            },
        ];
        commands
            .into_iter()
            .map(|command| ProposalItem {
                command: fleet_core::StoredCommand::new(command),
                audit_format: fleet_core::audit::AUDIT_EVENT_FORMAT,
                context: context.clone(),
                write_id: Some(crate::types::new_write_id()),
            })
            .collect()
    }

    #[test]
    fn a_full_entry_of_the_largest_valid_commands_fits_the_entry_budget() {
        let mut state = State::default();
        let setup = Context {
            now_ms: 0,
            actor: "a".into(),
            reason: String::new(),
        };
        let site = Command::AddSite {
            name: "s".repeat(MAX_NAME_LEN),
        };
        state.apply(&site, &setup).unwrap();
        for item in largest_valid_items() {
            state
                .check(&item.command, &item.context)
                .expect("the largest command is valid");
            let bytes = serde_json::to_vec(&item).unwrap().len();
            assert!(
                bytes * MAX_COMMANDS_PER_ENTRY <= MAX_ENTRY_BYTES,
                "{MAX_COMMANDS_PER_ENTRY} commands of {bytes} bytes exceed {MAX_ENTRY_BYTES}"
            );
        }
    }
}

#[cfg(test)]
mod packing {
    use fleet_core::{Command, Context, StoredCommand};

    use super::*;

    fn queued(reason_bytes: usize) -> Queued {
        let item = ProposalItem {
            command: StoredCommand::new(Command::AddSite {
                name: "oslo".into(),
            }),
            context: Context {
                now_ms: 1,
                actor: "a".into(),
                reason: "r".repeat(reason_bytes),
            },
            audit_format: fleet_core::audit::AUDIT_EVENT_FORMAT,
            write_id: None,
        };
        Queued {
            bytes: item_bytes(&item),
            item,
            reply: oneshot::channel().0,
        }
    }

    fn entry_bytes(batch: &[Queued]) -> usize {
        let items: Vec<ProposalItem> = batch.iter().map(|q| q.item.clone()).collect();
        serde_json::to_vec(&Proposal { items }).unwrap().len()
    }

    #[test]
    fn an_entry_closes_before_the_command_that_would_take_it_over_its_bytes() {
        let (queue, mut pending) = mpsc::channel(64);
        for _ in 0..10 {
            queue.try_send(queued(300 * 1024)).ok().unwrap();
        }
        let mut carried = None;
        let mut entries = Vec::new();
        let mut next = Some(queued(300 * 1024));
        while let Some(first) = next {
            let batch = pack(first, &mut pending, &mut carried);
            entries.push(entry_bytes(&batch));
            next = carried.take().or_else(|| pending.try_recv().ok());
        }
        assert_eq!(
            entries.len(),
            2,
            "11 commands of 300 KiB make two entries: {entries:?}"
        );
        for bytes in &entries {
            assert!(*bytes <= MAX_ENTRY_BYTES, "{bytes} bytes in one entry");
        }
        // The count is exact: a full entry is within a command of the limit.
        assert!(entries[0] + 300 * 1024 > MAX_ENTRY_BYTES, "{entries:?}");
    }

    #[test]
    fn small_commands_pack_up_to_the_command_limit() {
        let (queue, mut pending) = mpsc::channel(1024);
        for _ in 0..MAX_COMMANDS_PER_ENTRY + 5 {
            queue.try_send(queued(10)).ok().unwrap();
        }
        let mut carried = None;
        let batch = pack(queued(10), &mut pending, &mut carried);
        assert_eq!(batch.len(), MAX_COMMANDS_PER_ENTRY);
        assert!(carried.is_none());
        assert!(entry_bytes(&batch) <= MAX_ENTRY_BYTES);
    }
}
