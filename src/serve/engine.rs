//! The inference engine of one loaded model: a worker thread that owns the llama.cpp context
//! and runs continuous batching over `parallel` sequence slots, like llama.cpp's server.
//!
//! Every step builds one `LlamaBatch` holding the next token of every generating slot plus
//! prompt chunks of newly admitted slots (up to `n_batch` tokens), decodes it once, then
//! samples for every slot whose logits it produced. Requests beyond the slots wait in the job
//! channel (bounded by [`Engine::submit`]'s admission counter; full → [`EngineError::Busy`]).
//! Embedding requests count against the same cap and run one input per step, between decode
//! steps, on a second context.
//!
//! **A request whose event receiver is dropped is cancelled before the next step and its slot
//! freed.** The HTTP body owns the receiver, so a client that disconnects frees its slot.
//! **An embedding request whose reply receiver is dropped (the client left) stops before its
//! next input.**
//! **A slot keeps the tokens in its KV cache**; a new request goes to the free slot sharing the
//! longest prefix with its prompt and only the rest is evaluated (`swa_full` keeps sliding-window
//! layers' cache whole so that reuse stays exact).

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use llama_cpp_2::context::params::{LlamaContextParams, LlamaPoolingType};
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::data::LlamaTokenData;
use llama_cpp_2::token::data_array::LlamaTokenDataArray;
use llama_cpp_2::token::LlamaToken;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use super::options::Sampling;
use super::stop::StopBuffer;

/// Sizing of one model's context and scheduler.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Sequence slots (llama-server's `--parallel`).
    pub parallel: u32,
    /// Context length of each slot.
    pub ctx_per_slot: u32,
    /// Most tokens per decode step.
    pub batch: u32,
    pub threads: i32,
    /// Requests that may wait for a slot; more get [`EngineError::Busy`].
    pub queue: usize,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum EngineError {
    #[error("server busy: all {slots} slots and {queue} queue places are taken, try again later")]
    Busy { slots: u32, queue: usize },
    #[error("the model was unloaded")]
    Closed,
    #[error("cannot load the model: {0}")]
    Load(String),
}

/// One generation request.
#[derive(Debug, Clone)]
pub struct Job {
    /// Text to tokenize (special tokens parsed; BOS added when the model wants one and
    /// `context` is empty).
    pub prompt: String,
    /// Tokens placed before the prompt (Ollama's `context` from an earlier response).
    pub context: Vec<i32>,
    pub sampling: Sampling,
    pub stop: Vec<String>,
    pub num_predict: Option<u32>,
    /// Per-request context limit (`num_ctx`), at most the slot's.
    pub num_ctx: Option<u32>,
    pub grammar: Option<String>,
    /// Tokens at the start of the context that a context shift never drops (Ollama's
    /// `num_keep`).
    pub num_keep: usize,
    /// A prompt longer than the context keeps its first `num_keep` tokens and its tail
    /// (Ollama's generate) instead of being rejected (chat, whose messages the caller has
    /// already fitted).
    pub keep_tail: bool,
    /// When a generation reaches the end of the context, drop half of what follows the first
    /// `num_keep` tokens and go on (false for models whose cache cannot shift positions).
    pub context_shift: bool,
    /// Control tokens are written out as text (`[TOOL_CALLS]`, `<|python_tag|>`: the markers
    /// of some tool-call formats are control tokens, which are otherwise left out).
    pub special_text: bool,
}

/// Room kept for the answer when a prompt is fitted into a context of `limit` tokens: the
/// request's `num_predict`, or a quarter of the context, never more than half of it.
pub fn answer_room(limit: usize, num_predict: Option<u32>) -> usize {
    let half = (limit / 2).max(1);
    num_predict.map_or(limit / 4, |n| n as usize).clamp(1, half)
}

/// Generation without `num_predict` stops after this many contexts' worth of tokens even
/// when shifting could go on (Ollama's guard against endless generation: 10 × `num_ctx`).
const UNBOUNDED_PREDICT_CONTEXTS: usize = 10;

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DoneReason {
    Stop,
    Length,
}

impl DoneReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DoneReason::Stop => "stop",
            DoneReason::Length => "length",
        }
    }
}

/// Counters of a finished generation (Ollama's final-chunk fields).
#[derive(Debug, Clone)]
pub struct Done {
    pub reason: DoneReason,
    pub prompt_eval_count: usize,
    pub prompt_eval_duration: Duration,
    pub eval_count: usize,
    pub eval_duration: Duration,
    /// Prompt and generated tokens, for Ollama's `context`.
    pub context: Vec<i32>,
}

/// What the worker sends back for one job, in order: `Rejected` alone, or `Text`* then
/// `Done` or `Error`.
#[derive(Debug, Clone)]
pub enum Event {
    /// The request cannot be served as sent (prompt too long, bad grammar…): a client error,
    /// always the first and only event.
    Rejected(String),
    Text(String),
    Done(Done),
    Error(String),
}

/// Handle to a running engine; dropping the last one stops the worker (after its current
/// requests' receivers are gone) and frees the model.
pub struct Engine {
    jobs: Sender<Work>,
    alive: Arc<AtomicBool>,
    stats: Arc<EngineStats>,
    in_flight: Arc<AtomicUsize>,
    config: EngineConfig,
    pub model: Arc<LlamaModel>,
}

struct Queued {
    job: Job,
    events: UnboundedSender<Event>,
    _ticket: Ticket,
}

impl Queued {
    /// Sends the request's last event (`Done`, `Error`, `Rejected`) after giving back its
    /// admission place, so a client that has its answer never finds the engine still busy
    /// with it.
    fn finish(self, event: Event) {
        let Queued {
            events, _ticket, ..
        } = self;
        drop(_ticket);
        let _ = events.send(event);
    }
}

/// Texts to embed, one vector each (mean-pooled over the tokens).
#[derive(Debug, Clone)]
pub struct EmbedJob {
    pub inputs: Vec<String>,
    /// Cut inputs longer than the context instead of refusing them.
    pub truncate: bool,
    /// Scale every vector to unit length (Ollama's `/api/embed`; not `/api/embeddings`).
    pub normalize: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Embeddings {
    pub vectors: Vec<Vec<f32>>,
    pub prompt_tokens: usize,
}

type EmbedReply = tokio::sync::oneshot::Sender<Result<Embeddings, String>>;

/// What the worker receives.
enum Work {
    Generate(Queued),
    Embed(EmbedJob, EmbedReply, Ticket),
}

/// An embedding request in progress on the worker.
struct EmbedWork {
    job: EmbedJob,
    reply: EmbedReply,
    /// Inputs embedded so far.
    out: Embeddings,
    _ticket: Ticket,
}

/// Counters of one engine, for `/api/ps` (and for tests to see batching and prefix reuse).
#[derive(Debug, Default)]
pub struct EngineStats {
    /// Decode steps run.
    pub steps: AtomicU64,
    /// Most sequences decoded together in one step.
    pub max_sequences_per_step: AtomicUsize,
    /// Prompt tokens taken from a slot's cache instead of being evaluated.
    pub prompt_tokens_reused: AtomicU64,
    /// Prompt tokens evaluated.
    pub prompt_tokens_evaluated: AtomicU64,
    /// Embedding inputs computed.
    pub embed_inputs: AtomicU64,
    /// Embedding requests stopped because their client left.
    pub embeds_cancelled: AtomicU64,
    /// Context shifts: a generation reached the end of its context and half of it was dropped.
    pub context_shifts: AtomicU64,
    /// Prompts cut to their tail because they were longer than the context.
    pub prompts_truncated: AtomicU64,
}

/// Clears the engine's liveness flag when the worker thread ends.
struct Alive(Arc<AtomicBool>);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Counts a request from admission until its job is dropped.
struct Ticket(Arc<AtomicUsize>);

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();

/// The process-wide llama.cpp backend, initialised once (with llama.cpp's logs sent to
/// tracing, target `llama-cpp-2`).
pub fn backend() -> Result<&'static LlamaBackend, EngineError> {
    BACKEND
        .get_or_init(|| {
            llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
            LlamaBackend::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| EngineError::Load(e.clone()))
}

impl Engine {
    /// Loads the model (mmap) and starts its worker. Blocking: call from `spawn_blocking`.
    pub fn start(path: &std::path::Path, config: EngineConfig) -> Result<Engine, EngineError> {
        let backend = backend()?;
        let params = LlamaModelParams::default().with_use_mmap(true);
        let model = LlamaModel::load_from_file(backend, path, &params)
            .map_err(|e| EngineError::Load(format!("{}: {e}", path.display())))?;
        let model = Arc::new(model);
        let (jobs, rx) = std::sync::mpsc::channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let worker_model = model.clone();
        let worker_config = config.clone();
        let alive = Arc::new(AtomicBool::new(true));
        let alive_flag = Alive(alive.clone());
        let stats = Arc::new(EngineStats::default());
        let worker_stats = stats.clone();
        std::thread::Builder::new()
            .name("rawrxd-engine".into())
            .spawn(move || {
                // Cleared however the worker ends, a panic included, so the model is reloaded
                // on next use instead of failing every request.
                let _alive = alive_flag;
                worker(worker_model, worker_config, worker_stats, rx, ready_tx)
            })
            .map_err(|e| EngineError::Load(format!("cannot start the worker thread: {e}")))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Engine {
                jobs,
                alive,
                stats,
                in_flight: Arc::new(AtomicUsize::new(0)),
                config,
                model,
            }),
            Ok(Err(e)) => Err(EngineError::Load(e)),
            Err(_) => Err(EngineError::Load("the worker thread died".into())),
        }
    }

    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// False once the worker thread has ended (it only ends early by panicking).
    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Requests admitted and not finished (generating, embedding or queued).
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// A check that turns true once the worker thread has ended and freed its context (after
    /// the last handle is dropped).
    pub fn stopped(&self) -> impl Fn() -> bool + Send + Sync + 'static {
        let alive = self.alive.clone();
        move || !alive.load(Ordering::Acquire)
    }

    /// Takes one of the `parallel + queue` admission places, or fails with `Busy`.
    fn admit(&self) -> Result<Ticket, EngineError> {
        let cap = self.config.parallel as usize + self.config.queue;
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < cap).then_some(n + 1)
            })
            .map_err(|_| EngineError::Busy {
                slots: self.config.parallel,
                queue: self.config.queue,
            })?;
        Ok(Ticket(self.in_flight.clone()))
    }

    /// Queues `job`; events arrive on the returned receiver. Dropping it cancels the job.
    pub fn submit(&self, job: Job) -> Result<UnboundedReceiver<Event>, EngineError> {
        let ticket = self.admit()?;
        let (events, rx) = unbounded_channel();
        self.jobs
            .send(Work::Generate(Queued {
                job,
                events,
                _ticket: ticket,
            }))
            .map_err(|_| EngineError::Closed)?;
        Ok(rx)
    }

    /// Embeds `job`'s inputs on the worker (one input per step, between decode steps, on a
    /// second context made on first use with embeddings and mean pooling). Admitted like
    /// [`Engine::submit`] (`Busy` when full); dropping the returned future (the client left)
    /// stops the work before its next input.
    pub async fn embed(&self, job: EmbedJob) -> Result<Result<Embeddings, String>, EngineError> {
        let ticket = self.admit()?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Work::Embed(job, tx, ticket))
            .map_err(|_| EngineError::Closed)?;
        rx.await.map_err(|_| EngineError::Closed)
    }
}

/// A request being served by a slot.
struct Active {
    queued: Queued,
    /// Prompt tokens not yet decoded.
    pending: VecDeque<LlamaToken>,
    /// The sampled token to decode next (generating phase).
    next: Option<LlamaToken>,
    sampler: Sampler,
    stops: StopBuffer,
    utf8: Vec<u8>,
    prompt_tokens: usize,
    generated: usize,
    limit_ctx: usize,
    /// Most tokens to generate (`num_predict`, or 10 contexts when unset and shifting).
    max_generated: Option<usize>,
    all_tokens: Vec<i32>,
    started: Instant,
    first_token: Option<Instant>,
}

struct Slot {
    id: i32,
    /// Tokens whose KV entries this sequence holds, in position order.
    cache: Vec<LlamaToken>,
    active: Option<Active>,
    /// Index in the current batch whose logits belong to this slot.
    logits_at: Option<i32>,
    /// The current batch holds tokens of this slot.
    in_batch: bool,
}

fn worker(
    model: Arc<LlamaModel>,
    config: EngineConfig,
    stats: Arc<EngineStats>,
    jobs: Receiver<Work>,
    ready: Sender<Result<(), String>>,
) {
    let backend = match backend() {
        Ok(b) => b,
        Err(e) => {
            let _ = ready.send(Err(e.to_string()));
            return;
        }
    };
    let n_ctx = config.ctx_per_slot.saturating_mul(config.parallel);
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(n_ctx))
        .with_n_batch(config.batch)
        .with_n_ubatch(config.batch)
        .with_n_seq_max(config.parallel)
        .with_n_threads(config.threads)
        .with_n_threads_batch(config.threads)
        .with_kv_unified(false)
        .with_swa_full(true);
    let mut ctx = match model.new_context(backend, params) {
        Ok(ctx) => ctx,
        Err(e) => {
            let _ = ready.send(Err(format!(
                "cannot create a context of {n_ctx} tokens: {e}"
            )));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    let mut slots: Vec<Slot> = (0..config.parallel as i32)
        .map(|id| Slot {
            id,
            cache: Vec::new(),
            active: None,
            logits_at: None,
            in_batch: false,
        })
        .collect();
    let mut batch = LlamaBatch::new(config.batch as usize, 1);
    let mut closed = false;
    let mut embed_ctx: Option<LlamaContext<'_>> = None;
    let mut embeds: VecDeque<EmbedWork> = VecDeque::new();

    loop {
        // Cancelled requests free their slot before anything else is scheduled.
        for slot in &mut slots {
            if slot
                .active
                .as_ref()
                .is_some_and(|a| a.queued.events.is_closed())
            {
                tracing::debug!(slot = slot.id, "client gone; slot freed");
                slot.active = None;
            }
        }
        // Admit waiting jobs into free slots; block only when nothing is running.
        while !closed && slots.iter().any(|s| s.active.is_none()) {
            let busy = slots.iter().any(|s| s.active.is_some()) || !embeds.is_empty();
            let work = if busy {
                match jobs.try_recv() {
                    Ok(q) => q,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        closed = true;
                        break;
                    }
                }
            } else {
                match jobs.recv() {
                    Ok(q) => q,
                    Err(_) => {
                        closed = true;
                        break;
                    }
                }
            };
            let queued = match work {
                Work::Generate(queued) => queued,
                Work::Embed(job, reply, ticket) => {
                    embeds.push_back(EmbedWork {
                        out: Embeddings {
                            vectors: Vec::with_capacity(job.inputs.len().min(1024)),
                            prompt_tokens: 0,
                        },
                        job,
                        reply,
                        _ticket: ticket,
                    });
                    continue;
                }
            };
            if queued.events.is_closed() {
                continue;
            }
            admit(&model, &mut ctx, &config, &stats, &mut slots, queued);
        }
        // One input of the oldest embedding request, unless its client has left.
        if let Some(work) = embeds.front_mut() {
            let step = if work.reply.is_closed() {
                stats.embeds_cancelled.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    done = work.out.vectors.len(),
                    inputs = work.job.inputs.len(),
                    "client gone; embedding cancelled"
                );
                EmbedStep::Cancelled
            } else {
                embed_next(&model, &mut embed_ctx, &config, &stats, work)
            };
            match step {
                EmbedStep::More => {}
                EmbedStep::Cancelled => {
                    embeds.pop_front();
                }
                EmbedStep::Done(result) => {
                    if let Some(EmbedWork { reply, _ticket, .. }) = embeds.pop_front() {
                        // The place is given back before the answer, as in `Queued::finish`.
                        drop(_ticket);
                        let _ = reply.send(result);
                    }
                }
            }
        }
        if closed && slots.iter().all(|s| s.active.is_none()) && embeds.is_empty() {
            tracing::debug!("engine stopped");
            return;
        }

        // One batch: generating slots first (one token each), then prompt chunks.
        batch.clear();
        let mut budget = config.batch as usize;
        let mut failed = None;
        for slot in &mut slots {
            slot.logits_at = None;
            slot.in_batch = false;
            let Some(active) = slot.active.as_mut() else {
                continue;
            };
            if let Some(token) = active.next.take() {
                if slot.cache.len() + 1 >= active.limit_ctx {
                    let (can_shift, num_keep) =
                        (active.queued.job.context_shift, active.queued.job.num_keep);
                    let shifted = can_shift && shift_context(&mut ctx, slot, num_keep);
                    if !shifted {
                        // No room and no shift: the token is not decoded; the answer ends.
                        if let Some(active) = slot.active.take() {
                            finish(active, DoneReason::Length, false);
                        }
                        continue;
                    }
                    stats.context_shifts.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(slot = slot.id, kept = slot.cache.len(), "context shifted");
                }
                slot.in_batch = true;
                let pos = slot.cache.len() as i32;
                if let Err(e) = batch.add(token, pos, &[slot.id], true) {
                    failed = Some(e.to_string());
                    break;
                }
                slot.cache.push(token);
                slot.logits_at = Some(batch.n_tokens() - 1);
                budget -= 1;
            }
        }
        for slot in &mut slots {
            if failed.is_some() || budget == 0 {
                break;
            }
            let Some(active) = slot.active.as_mut() else {
                continue;
            };
            while budget > 0 {
                let Some(token) = active.pending.pop_front() else {
                    break;
                };
                let last = active.pending.is_empty();
                slot.in_batch = true;
                let pos = slot.cache.len() as i32;
                if let Err(e) = batch.add(token, pos, &[slot.id], last) {
                    failed = Some(e.to_string());
                    break;
                }
                slot.cache.push(token);
                budget -= 1;
                if last {
                    slot.logits_at = Some(batch.n_tokens() - 1);
                }
            }
        }
        if batch.n_tokens() == 0 {
            continue;
        }
        let sequences = slots.iter().filter(|s| s.in_batch).count();
        stats.steps.fetch_add(1, Ordering::Relaxed);
        stats
            .max_sequences_per_step
            .fetch_max(sequences, Ordering::Relaxed);
        let result = match failed {
            Some(e) => Err(e),
            None => ctx.decode(&mut batch).map_err(|e| e.to_string()),
        };
        if let Err(e) = result {
            tracing::warn!("decode failed: {e}");
            for slot in &mut slots {
                if let Some(active) = slot.active.take() {
                    active
                        .queued
                        .finish(Event::Error(format!("inference failed: {e}")));
                }
                slot.cache.clear();
                let _ = ctx.clear_kv_cache_seq(Some(slot.id as u32), None, None);
            }
            continue;
        }
        for slot in &mut slots {
            if let Some(at) = slot.logits_at {
                step(&model, &ctx, slot, at);
            }
        }
    }
}

/// Tokenizes a job's prompt, picks the free slot sharing the longest prefix with it, trims
/// that slot's cache to the shared prefix and makes it active.
fn admit(
    model: &LlamaModel,
    ctx: &mut LlamaContext<'_>,
    config: &EngineConfig,
    stats: &EngineStats,
    slots: &mut [Slot],
    queued: Queued,
) {
    let started = Instant::now();
    let vocab = model.vocab();
    let mut tokens: Vec<LlamaToken> = queued
        .job
        .context
        .iter()
        .map(|&t| LlamaToken::new(t))
        .collect();
    let add_bos =
        tokens.is_empty() && vocab.should_add_bos() && !starts_with_bos(model, &queued.job.prompt);
    tokens.extend(vocab.tokenize(queued.job.prompt.as_bytes(), add_bos, true));
    let limit_ctx = queued
        .job
        .num_ctx
        .map_or(config.ctx_per_slot, |n| n.clamp(1, config.ctx_per_slot))
        as usize;
    if tokens.is_empty() {
        queued.finish(Event::Rejected("the prompt is empty".into()));
        return;
    }
    let room = answer_room(limit_ctx, queued.job.num_predict);
    if queued.job.keep_tail && tokens.len() + room > limit_ctx {
        let before = tokens.len();
        keep_tail(&mut tokens, queued.job.num_keep, limit_ctx - room);
        stats.prompts_truncated.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            prompt = before,
            kept = tokens.len(),
            num_ctx = limit_ctx,
            "prompt longer than the context: kept its first {} tokens and its tail",
            queued.job.num_keep.min(tokens.len())
        );
    }
    if tokens.len() >= limit_ctx {
        queued.finish(Event::Rejected(format!(
            "the prompt is {} tokens, more than the context length of {limit_ctx}",
            tokens.len()
        )));
        return;
    }
    if let Some(bad) = tokens.iter().find(|t| t.0 < 0 || t.0 >= model.n_vocab()) {
        queued.finish(Event::Rejected(format!(
            "invalid token {} in context",
            bad.0
        )));
        return;
    }
    let sampler = match build_sampler(
        model,
        &queued.job.sampling,
        queued.job.grammar.as_deref(),
        limit_ctx,
    ) {
        Ok(s) => s,
        Err(e) => {
            queued.finish(Event::Rejected(e));
            return;
        }
    };
    let Some(slot) = slots
        .iter_mut()
        .filter(|s| s.active.is_none())
        .max_by_key(|s| common_prefix(&s.cache, &tokens))
    else {
        return;
    };
    // At least one prompt token must be evaluated to get logits.
    let mut keep = common_prefix(&slot.cache, &tokens).min(tokens.len() - 1);
    let trimmed = ctx
        .clear_kv_cache_seq(Some(slot.id as u32), Some(keep as u32), None)
        .unwrap_or(false);
    if !trimmed {
        let _ = ctx.clear_kv_cache_seq(Some(slot.id as u32), None, None);
        keep = 0;
    }
    slot.cache.truncate(keep);
    stats
        .prompt_tokens_reused
        .fetch_add(keep as u64, Ordering::Relaxed);
    stats
        .prompt_tokens_evaluated
        .fetch_add((tokens.len() - keep) as u64, Ordering::Relaxed);
    tracing::debug!(
        slot = slot.id,
        prompt = tokens.len(),
        reused = keep,
        "request admitted"
    );
    let stop = queued.job.stop.clone();
    let max_generated = match queued.job.num_predict {
        Some(n) => Some(n as usize),
        None if queued.job.context_shift => Some(UNBOUNDED_PREDICT_CONTEXTS * limit_ctx),
        // Without shifting the context's end stops the generation.
        None => None,
    };
    slot.active = Some(Active {
        pending: tokens[keep..].iter().copied().collect(),
        all_tokens: tokens.iter().map(|t| t.0).collect(),
        prompt_tokens: tokens.len(),
        queued,
        next: None,
        sampler,
        stops: StopBuffer::new(stop),
        utf8: Vec::new(),
        generated: 0,
        limit_ctx,
        max_generated,
        started,
        first_token: None,
    });
}

/// What one embedding step left to do.
enum EmbedStep {
    More,
    Done(Result<Embeddings, String>),
    Cancelled,
}

/// Embeds the next input of `work` on the embedding context (created on first use).
fn embed_next<'m>(
    model: &'m LlamaModel,
    slot: &mut Option<LlamaContext<'m>>,
    config: &EngineConfig,
    stats: &EngineStats,
    work: &mut EmbedWork,
) -> EmbedStep {
    let Some(input) = work.job.inputs.get(work.out.vectors.len()) else {
        return EmbedStep::Done(Ok(std::mem::take(&mut work.out)));
    };
    match embed_one(model, slot, config, input, &work.job) {
        Ok((vector, tokens)) => {
            stats.embed_inputs.fetch_add(1, Ordering::Relaxed);
            work.out.prompt_tokens += tokens;
            work.out.vectors.push(vector);
            if work.out.vectors.len() < work.job.inputs.len() {
                EmbedStep::More
            } else {
                EmbedStep::Done(Ok(std::mem::take(&mut work.out)))
            }
        }
        Err(e) => EmbedStep::Done(Err(e)),
    }
}

/// One input's pooled vector and its token count.
fn embed_one<'m>(
    model: &'m LlamaModel,
    slot: &mut Option<LlamaContext<'m>>,
    config: &EngineConfig,
    input: &str,
    job: &EmbedJob,
) -> Result<(Vec<f32>, usize), String> {
    let n_ctx = config.ctx_per_slot;
    if slot.is_none() {
        let backend = backend().map_err(|e| e.to_string())?;
        let params = LlamaContextParams::default()
            .with_embeddings(true)
            .with_pooling_type(LlamaPoolingType::Mean)
            .with_n_ctx(NonZeroU32::new(n_ctx))
            .with_n_batch(n_ctx)
            .with_n_ubatch(n_ctx)
            .with_n_seq_max(1)
            .with_n_threads(config.threads)
            .with_n_threads_batch(config.threads);
        let ctx = model
            .new_context(backend, params)
            .map_err(|e| format!("cannot create an embedding context: {e}"))?;
        *slot = Some(ctx);
    }
    let Some(ctx) = slot.as_mut() else {
        return Err("no embedding context".into());
    };
    let vocab = model.vocab();
    let mut tokens = vocab.tokenize(input.as_bytes(), vocab.should_add_bos(), false);
    if tokens.is_empty() {
        return Err("cannot embed an empty input".into());
    }
    if tokens.len() > n_ctx as usize {
        if !job.truncate {
            return Err(format!(
                "the input is {} tokens, more than the context length of {n_ctx}",
                tokens.len()
            ));
        }
        tokens.truncate(n_ctx as usize);
    }
    let mut batch = LlamaBatch::new(tokens.len(), 1);
    ctx.clear_kv_cache();
    batch
        .add_sequence(&tokens, 0, true)
        .map_err(|e| e.to_string())?;
    ctx.decode(&mut batch)
        .map_err(|e| format!("embedding failed: {e}"))?;
    let mut vector = ctx
        .embeddings_seq_ith(0)
        .map_err(|_| "the model gave no pooled embedding".to_string())?
        .to_vec();
    if job.normalize {
        let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            vector.iter_mut().for_each(|x| *x /= norm);
        }
    }
    Ok((vector, tokens.len()))
}

/// Cuts `tokens` to `target` tokens: the first `num_keep` (at most `target / 2`) and the
/// tail, as Ollama's runner truncates a prompt longer than its context.
fn keep_tail(tokens: &mut Vec<LlamaToken>, num_keep: usize, target: usize) {
    if tokens.len() <= target {
        return;
    }
    let keep = num_keep.min(target / 2);
    let cut = tokens.len() - target;
    tokens.drain(keep..keep + cut);
}

/// Frees room at the end of `slot`'s context: keeps the first `num_keep` tokens, drops half
/// of the rest and moves what follows back (llama.cpp's server and Ollama shift the same
/// way). False when nothing can be dropped.
fn shift_context(ctx: &mut LlamaContext<'_>, slot: &mut Slot, num_keep: usize) -> bool {
    let len = slot.cache.len();
    let keep = num_keep.min(len);
    let discard = (len - keep) / 2;
    if discard == 0 {
        return false;
    }
    let (Ok(keep32), Ok(end32), Ok(len32), Ok(delta)) = (
        u32::try_from(keep),
        u32::try_from(keep + discard),
        u32::try_from(len),
        i32::try_from(discard),
    ) else {
        return false;
    };
    if !ctx
        .clear_kv_cache_seq(Some(slot.id as u32), Some(keep32), Some(end32))
        .unwrap_or(false)
    {
        return false;
    }
    if ctx
        .kv_cache_seq_add(slot.id, Some(end32), Some(len32), -delta)
        .is_err()
    {
        return false;
    }
    slot.cache.drain(keep..keep + discard);
    true
}

fn starts_with_bos(model: &LlamaModel, prompt: &str) -> bool {
    let bos = model
        .vocab()
        .token_to_piece(model.vocab().bos(), true, None);
    !bos.is_empty() && prompt.as_bytes().starts_with(&bos)
}

fn common_prefix(a: &[LlamaToken], b: &[LlamaToken]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// How a slot picks its next token.
enum Sampler {
    /// Plain greedy decoding (temperature ≤ 0, no grammar, no penalty): the most likely token,
    /// read straight off the logits. Same choice as llama.cpp's greedy sampler (the first of
    /// equal maxima) without copying all of the vocabulary's logits into a candidate array.
    Argmax,
    Chain(Box<Chain>),
}

/// llama.cpp samplers run the way llama.cpp's own server runs them (`common_sampler`).
struct Chain {
    /// Penalties, top-k, top-p, min-p, temperature, then the draw (or greedy).
    chain: LlamaSampler,
    /// A grammar is checked against the chain's choice first; only when it rejects that token
    /// is it applied to every candidate and the chain run again (grammar-based rejection
    /// sampling, as `common_sampler_sample` does: walking the grammar over the whole vocabulary
    /// for every token is what makes constrained decoding slow).
    grammar: Option<LlamaSampler>,
    /// Hand the chain only this many of the most likely candidates instead of the whole
    /// vocabulary (262,144 for Gemma 3) when that cannot change its choice: a top-k of `k`
    /// after penalties that only lower logits keeps tokens from the `k + last_n` most likely
    /// (at most `last_n` tokens are penalised, so a token below `k + last_n` others always has
    /// `k` unpenalised ones above it).
    prefilter: Option<usize>,
    /// The candidate buffer, kept between tokens.
    buf: Vec<LlamaTokenData>,
}

impl Sampler {
    /// The next token from the logits at batch index `at` (a chain also accepts it).
    fn sample(&mut self, ctx: &LlamaContext<'_>, at: i32) -> LlamaToken {
        match self {
            Sampler::Argmax => LlamaToken::new(argmax(ctx.get_logits_ith(at))),
            Sampler::Chain(chain) => chain.sample(ctx.get_logits_ith(at)),
        }
    }
}

impl Chain {
    fn sample(&mut self, logits: &[f32]) -> LlamaToken {
        let mut token = self.run(logits, self.prefilter, false);
        if let Some(grammar) = self.grammar.as_mut() {
            let allowed = token.is_some_and(|t| {
                let mut one =
                    LlamaTokenDataArray::new(vec![LlamaTokenData::new(t, 1.0, 0.0)], false);
                grammar.apply(&mut one);
                one.data
                    .first()
                    .is_some_and(|d| d.logit() != f32::NEG_INFINITY)
            });
            if !allowed {
                token = self.run(logits, None, true);
            }
        }
        let token = token.unwrap_or_else(|| LlamaToken::new(argmax(logits)));
        if let Some(grammar) = self.grammar.as_mut() {
            grammar.accept(token);
        }
        self.chain.accept(token);
        token
    }

    /// The chain's choice over the candidates (the `keep` most likely, or all; the grammar
    /// first when `grammar`), without accepting it.
    fn run(&mut self, logits: &[f32], keep: Option<usize>, grammar: bool) -> Option<LlamaToken> {
        let mut buf = std::mem::take(&mut self.buf);
        match keep {
            Some(n) => most_likely(logits, n, &mut buf),
            None => {
                buf.clear();
                buf.extend(
                    logits
                        .iter()
                        .enumerate()
                        .map(|(i, &l)| LlamaTokenData::new(LlamaToken::new(i as i32), l, 0.0)),
                );
            }
        }
        let mut cur = LlamaTokenDataArray::new(buf, false);
        if grammar {
            if let Some(g) = self.grammar.as_mut() {
                g.apply(&mut cur);
            }
        }
        self.chain.apply(&mut cur);
        let token = cur.selected_token();
        self.buf = cur.data;
        token
    }
}

/// The `n` largest logits as candidates (in no particular order), in one pass: values above
/// a running threshold are collected and, whenever `2n` have gathered, cut back to the `n`
/// largest. NaNs are never taken.
fn most_likely(logits: &[f32], n: usize, out: &mut Vec<LlamaTokenData>) {
    out.clear();
    let n = n.max(1);
    let mut threshold = f32::NEG_INFINITY;
    let by_logit = |a: &LlamaTokenData, b: &LlamaTokenData| b.logit().total_cmp(&a.logit());
    for (i, &logit) in logits.iter().enumerate() {
        if logit > threshold || (out.len() < n && !logit.is_nan()) {
            out.push(LlamaTokenData::new(LlamaToken::new(i as i32), logit, 0.0));
            if out.len() >= 2 * n {
                out.select_nth_unstable_by(n - 1, by_logit);
                out.truncate(n);
                threshold = out
                    .iter()
                    .map(LlamaTokenData::logit)
                    .fold(f32::INFINITY, f32::min);
            }
        }
    }
    if out.len() > n {
        out.select_nth_unstable_by(n - 1, by_logit);
        out.truncate(n);
    }
}

/// Index of the first largest value; NaNs never win.
fn argmax(logits: &[f32]) -> i32 {
    let max = logits
        .iter()
        .fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m });
    let at = logits.iter().position(|&x| x == max).unwrap_or(0);
    i32::try_from(at).unwrap_or(0)
}

/// Ollama's sampler order (llama.cpp's common sampler): grammar, penalties, top-k, top-p,
/// min-p, temperature, then a seeded draw (greedy when temperature ≤ 0).
fn build_sampler(
    model: &LlamaModel,
    s: &Sampling,
    grammar: Option<&str>,
    n_ctx: usize,
) -> Result<Sampler, String> {
    let mut chain = Vec::new();
    let grammar = match grammar {
        Some(g) => Some(
            LlamaSampler::grammar(model, g, "root").map_err(|e| format!("invalid grammar: {e}"))?,
        ),
        None => None,
    };
    // With no penalty set the penalties sampler changes nothing; leaving it out saves its
    // per-token bookkeeping.
    let penalised =
        s.repeat_penalty != 1.0 || s.frequency_penalty != 0.0 || s.presence_penalty != 0.0;
    // repeat_last_n -1: the whole context.
    let last_n = if s.repeat_last_n < 0 {
        i32::try_from(n_ctx).unwrap_or(i32::MAX)
    } else {
        s.repeat_last_n
    };
    if penalised && last_n != 0 {
        chain.push(LlamaSampler::penalties(
            model.n_vocab(),
            last_n,
            s.repeat_penalty,
            s.frequency_penalty,
            s.presence_penalty,
        ));
    }
    // Penalties that can raise a logit (negative frequency/presence penalties, a repeat
    // penalty below 1) could lift a token from anywhere in the vocabulary: no prefilter then.
    let lowering =
        s.repeat_penalty >= 1.0 && s.frequency_penalty >= 0.0 && s.presence_penalty >= 0.0;
    let penalised_n = if penalised {
        usize::try_from(last_n).unwrap_or(usize::MAX)
    } else {
        0
    };
    let kept = if s.temperature <= 0.0 {
        Some(1)
    } else if s.top_k > 0 {
        usize::try_from(s.top_k).ok()
    } else {
        None
    };
    let n_vocab = usize::try_from(model.n_vocab()).unwrap_or(0);
    let prefilter = kept
        .filter(|_| lowering)
        .map(|k| k.saturating_add(penalised_n))
        .filter(|&n| n.saturating_mul(4) < n_vocab);
    if s.temperature <= 0.0 {
        if chain.is_empty() && grammar.is_none() {
            return Ok(Sampler::Argmax);
        }
        chain.push(LlamaSampler::greedy());
    } else {
        if s.top_k > 0 {
            chain.push(LlamaSampler::top_k(s.top_k));
        }
        if s.top_p < 1.0 {
            chain.push(LlamaSampler::top_p(s.top_p, 1));
        }
        if s.min_p > 0.0 {
            chain.push(LlamaSampler::min_p(s.min_p, 1));
        }
        chain.push(LlamaSampler::temp(s.temperature));
        // u32::MAX is llama.cpp's LLAMA_DEFAULT_SEED: a random seed.
        chain.push(LlamaSampler::dist(s.seed.unwrap_or(u32::MAX)));
    }
    Ok(Sampler::Chain(Box::new(Chain {
        chain: LlamaSampler::chain_simple(chain),
        grammar,
        prefilter,
        buf: Vec::new(),
    })))
}

/// Samples one token for `slot` from batch index `at`, streams its text, and ends the request
/// on end-of-generation, a stop sequence, `num_predict` or the context limit.
fn step(model: &LlamaModel, ctx: &LlamaContext<'_>, slot: &mut Slot, at: i32) {
    let Some(active) = slot.active.as_mut() else {
        return;
    };
    let token = active.sampler.sample(ctx, at);
    if active.first_token.is_none() {
        active.first_token = Some(Instant::now());
    }
    let vocab = model.vocab();
    let mut reason = None;
    let mut on_sequence = false;
    if vocab.is_eog(token) {
        reason = Some(DoneReason::Stop);
    } else {
        active.generated += 1;
        active.all_tokens.push(token.0);
        let special = active.queued.job.special_text;
        active
            .utf8
            .extend(vocab.token_to_piece(token, special, None));
        let text = take_utf8(&mut active.utf8);
        let released = active.stops.push(&text);
        if !released.text.is_empty() {
            let _ = active.queued.events.send(Event::Text(released.text));
        }
        if released.stopped {
            reason = Some(DoneReason::Stop);
            on_sequence = true;
        } else if active.max_generated.is_some_and(|n| active.generated >= n) {
            reason = Some(DoneReason::Length);
        } else {
            // At the context's end the worker shifts the context (or ends the answer)
            // before this token is decoded.
            active.next = Some(token);
        }
    }
    let Some(reason) = reason else {
        return;
    };
    let Some(active) = slot.active.take() else {
        return;
    };
    finish(active, reason, on_sequence);
}

/// Ends `active`'s answer: flushes held text (none after a stop sequence, `on_sequence`) and
/// sends the counters.
fn finish(mut active: Active, reason: DoneReason, on_sequence: bool) {
    // After a stop sequence nothing is held (and what follows it is dropped).
    if !on_sequence {
        let mut rest = active.stops.finish();
        rest.push_str(&String::from_utf8_lossy(&std::mem::take(&mut active.utf8)));
        if !rest.is_empty() {
            let _ = active.queued.events.send(Event::Text(rest));
        }
    }
    let first = active.first_token.unwrap_or_else(Instant::now);
    let done = Done {
        reason,
        prompt_eval_count: active.prompt_tokens,
        prompt_eval_duration: first.duration_since(active.started),
        eval_count: active.generated,
        eval_duration: first.elapsed(),
        context: std::mem::take(&mut active.all_tokens),
    };
    active.queued.finish(Event::Done(done));
}

/// Removes and returns the longest valid UTF-8 prefix of `buf`; an incomplete character at
/// the end stays for the next piece, invalid bytes become U+FFFD.
fn take_utf8(buf: &mut Vec<u8>) -> String {
    match std::str::from_utf8(buf) {
        Ok(s) => {
            let s = s.to_string();
            buf.clear();
            s
        }
        Err(e) => {
            let valid = e.valid_up_to();
            if e.error_len().is_none() {
                // Incomplete sequence at the end: keep it.
                let rest = buf.split_off(valid);
                let s = String::from_utf8_lossy(buf).into_owned();
                *buf = rest;
                s
            } else {
                let s = String::from_utf8_lossy(buf).into_owned();
                buf.clear();
                s
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Logits shaped like a model's: a few likely tokens, a long tail (deterministic).
    fn logits(n: usize, step: u64) -> Vec<f32> {
        let mut x = step.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let u = (x >> 11) as f32 / (1u64 << 53) as f32;
                // Mostly low, some high, like logits (real logits almost never tie; with ties
                // the order among equals, and so the draw, depends on the array's order).
                u * u * u * 12.0 - 4.0
            })
            .collect()
    }

    #[test]
    fn most_likely_keeps_the_n_largest() {
        for (n, len) in [(1, 10), (40, 5000), (104, 50_000), (7, 7), (10, 3)] {
            let l = logits(len, n as u64);
            let mut got = Vec::new();
            most_likely(&l, n, &mut got);
            let mut want = l.clone();
            want.sort_by(|a, b| b.total_cmp(a));
            want.truncate(n);
            let mut have: Vec<f32> = got.iter().map(LlamaTokenData::logit).collect();
            have.sort_by(|a, b| b.total_cmp(a));
            assert_eq!(have, want, "n {n} len {len}");
            assert!(got.iter().all(|d| l[d.id().0 as usize] == d.logit()));
        }
        let mut got = Vec::new();
        most_likely(&[f32::NAN, 1.0, f32::NAN, 3.0], 2, &mut got);
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(|d| !d.logit().is_nan()));
    }

    /// Ollama's default chain over the whole vocabulary and over the prefiltered candidates
    /// choose the same tokens, seed for seed, penalties included.
    #[test]
    fn a_prefiltered_chain_chooses_what_the_whole_vocabulary_would() {
        let n_vocab = 50_000;
        for (temperature, penalty, top_k) in [(0.8, 1.1, 40), (0.0, 1.1, 40), (1.0, 1.3, 5)] {
            let make = |prefilter: Option<usize>| {
                let mut samplers = vec![LlamaSampler::penalties(n_vocab, 64, penalty, 0.0, 0.0)];
                if temperature > 0.0 {
                    samplers.push(LlamaSampler::top_k(top_k));
                    samplers.push(LlamaSampler::top_p(0.9, 1));
                    samplers.push(LlamaSampler::temp(temperature));
                    samplers.push(LlamaSampler::dist(7));
                } else {
                    samplers.push(LlamaSampler::greedy());
                }
                Chain {
                    chain: LlamaSampler::chain_simple(samplers),
                    grammar: None,
                    prefilter,
                    buf: Vec::new(),
                }
            };
            let keep = if temperature > 0.0 { top_k as usize } else { 1 } + 64;
            let (mut whole, mut cut) = (make(None), make(Some(keep)));
            let mut tokens = Vec::new();
            for step in 0..300 {
                let mut l = logits(n_vocab as usize, step);
                // Tokens chosen earlier get pushed up, so the penalties matter.
                for t in tokens.iter().rev().take(30) {
                    l[*t as usize] += 3.0;
                }
                let a = whole.sample(&l);
                let b = cut.sample(&l);
                assert_eq!(a, b, "step {step}, temperature {temperature}");
                tokens.push(a.0);
            }
            let distinct: std::collections::HashSet<_> = tokens.iter().collect();
            let least = if temperature > 0.0 { 10 } else { 2 };
            assert!(
                distinct.len() >= least,
                "{} distinct tokens",
                distinct.len()
            );
        }
    }

    #[test]
    fn argmax_is_the_first_largest_and_skips_nans() {
        assert_eq!(argmax(&[-3.0, -1.0, -2.0]), 1);
        assert_eq!(argmax(&[0.5, 2.0, 2.0, 1.0]), 1);
        assert_eq!(argmax(&[f32::NAN, 1.0, f32::NAN, 3.0]), 3);
        assert_eq!(argmax(&[f32::NEG_INFINITY, f32::NEG_INFINITY]), 0);
        let mut big = vec![0.0_f32; 262_144];
        big[200_001] = 7.5;
        assert_eq!(argmax(&big), 200_001);
    }
}
