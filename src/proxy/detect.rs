//! `detect` rules on the request path: watching answers, retrying, stopping.
//!
//! * Streamed answers go through [`DetectBody`], under the re-framer when other rules apply
//!   too (so those rules only ever see the answer the client gets). It cuts the upstream's
//!   bytes into NDJSON lines / SSE events and feeds each to the [`Watch`]. While the watch is
//!   [`holding`](Watch::holding) — an enforced `retry` rule could still fire on what the
//!   client has not seen — the units wait; an ordinary answer goes out as soon as its first
//!   words rule the start patterns out. A `retry` finding while nothing has gone out drops
//!   the upstream body (the model stops), sends the request again with the rule's correction
//!   and options, and streams the new answer in the same response, so the client sees one
//!   well-formed stream. A `stop` finding ends the answer there with a final chunk in the
//!   client's protocol and drops the upstream body.
//! * Whole answers (`"stream": false`) go through [`whole`]: each answer is read whole,
//!   checked, retried or cut, before the response head is sent.
//!
//! Retries are bounded: each rule at most its `max_retries` per request, all rules together
//! at most [`MAX_RETRIES`](crate::rules::MAX_RETRIES); a retried request is never watched for
//! more retries than that, and the last answer is delivered even if it also fails (audited).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use pin_project_lite::pin_project;

use crate::audit::{FailureEvent, HitSink};
use crate::detect::answer::{self, Reader, Units};
use crate::detect::retry::retry_body;
use crate::detect::{Finding, Selected, Tools, Watch};
use crate::edge::wire::Framing;
use crate::proxy::body::{Blockable, BoxError, UpstreamBody};
use crate::proxy::state::ProxyState;
use crate::proxy::upstream::SendError;
use crate::rules::{Endpoint, OnFailure, MAX_RETRIES};

/// Everything a request's `detect` rules need: the rules, the request's tools, and what it
/// takes to send the request again.
pub struct Plan {
    pub selected: Selected,
    pub tools: Arc<Tools>,
    pub endpoint: Endpoint,
    /// The request as forwarded (after request-side rules), to send again.
    pub resend: Option<Resend>,
}

/// A request as it was sent upstream.
pub struct Resend {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Retries so far in one request.
#[derive(Default)]
struct Budget {
    /// (rule index, retries) for each rule that has retried.
    by_rule: Vec<(usize, usize)>,
    total: usize,
}

impl Budget {
    /// Whether `finding`'s rule may retry once more.
    fn allows(&self, selected: &Selected, finding: &Finding) -> bool {
        let Some(armed) = selected.rule(finding.index) else {
            return false;
        };
        let used = self
            .by_rule
            .iter()
            .find(|(i, _)| *i == finding.index)
            .map_or(0, |(_, n)| *n);
        used < armed.detect.max_retries && self.total < MAX_RETRIES
    }

    fn spend(&mut self, index: usize) {
        self.total += 1;
        match self.by_rule.iter_mut().find(|(i, _)| *i == index) {
            Some((_, n)) => *n += 1,
            None => self.by_rule.push((index, 1)),
        }
    }
}

type Sending = Pin<Box<dyn Future<Output = Result<Response<Incoming>, SendError>> + Send>>;

/// A retry under way: the finding that caused it and the first answer's text.
struct Retrying {
    finding: Finding,
    first_answer: String,
}

impl Plan {
    /// The request to send again for `finding`, or why there is none.
    fn retry_request(
        &self,
        finding: &Finding,
    ) -> Result<Request<crate::proxy::upstream::UpstreamRequestBody>, String> {
        let resend = self.resend.as_ref().ok_or("the request was not kept")?;
        let armed = self
            .selected
            .rule(finding.index)
            .ok_or("the rule is gone")?;
        let body = retry_body(
            self.endpoint,
            &resend.body,
            armed.detect.correction.as_deref(),
            &armed.detect.retry_options,
        )?;
        let mut request = Request::new(
            Full::new(Bytes::from(body.clone()))
                .map_err(|never| match never {})
                .boxed_unsync(),
        );
        *request.method_mut() = resend.method.clone();
        *request.uri_mut() = resend.uri.clone();
        *request.headers_mut() = resend.headers.clone();
        request
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        Ok(request)
    }
}

/// Counts and audits one finding; `action` says what was done about it.
fn report(
    state: &ProxyState,
    sink: &HitSink,
    selected: &Selected,
    finding: &Finding,
    action: &str,
    detected: String,
    corrected: String,
) {
    state
        .stats
        .failures_detected
        .fetch_add(1, Ordering::Relaxed);
    let acted = matches!(action, "retry" | "stop");
    selected.detectors().count(finding, acted);
    sink.record_failure(FailureEvent {
        rule_id: finding.rule_id.clone(),
        shadow: finding.shadow,
        confidence: finding.confidence,
        detector: finding.detector,
        action: action.to_string(),
        detected,
        corrected,
        evidence: finding.evidence.clone(),
    });
}

/// What to do about the findings of one answer.
enum Verdict {
    Deliver,
    Retry(Finding),
    Stop(Finding),
}

/// Audits the findings that need no decision and picks the one to act on: a stop (always
/// possible), or a retry when `may_retry` and the budget allows. Retry findings that cannot
/// retry are audited as `delivered`.
fn decide(
    state: &ProxyState,
    sink: &HitSink,
    plan: &Plan,
    budget: &Budget,
    findings: Vec<Finding>,
    may_retry: bool,
    answer_so_far: &str,
) -> Verdict {
    let mut verdict = Verdict::Deliver;
    for finding in findings {
        let enforced = !finding.shadow;
        let decided = match (finding.on_failure, &verdict) {
            (OnFailure::Stop, Verdict::Deliver) if enforced => {
                verdict = Verdict::Stop(finding.clone());
                None
            }
            (OnFailure::Retry, Verdict::Deliver)
                if enforced && may_retry && budget.allows(&plan.selected, &finding) =>
            {
                verdict = Verdict::Retry(finding.clone());
                None
            }
            (OnFailure::Retry, _) if enforced => Some("delivered"),
            (OnFailure::Stop, _) if enforced => Some("audit"),
            _ => Some("audit"),
        };
        if let Some(action) = decided {
            let action = match (finding.shadow, action) {
                (true, _) => format!("{} (shadow)", finding.on_failure.name()),
                (false, action) => action.to_string(),
            };
            report(
                state,
                sink,
                &plan.selected,
                &finding,
                &action,
                answer_so_far.to_string(),
                String::new(),
            );
        }
    }
    verdict
}

pin_project! {
    /// A streamed answer under `detect` rules (see the module docs).
    pub struct DetectBody {
        #[pin]
        inner: UpstreamBody,
        state: Arc<ProxyState>,
        plan: Arc<Plan>,
        sink: HitSink,
        sse: bool,
        units: Units,
        reader: Reader,
        watch: Watch,
        // Units waiting while the watch holds the answer's start.
        held: Vec<u8>,
        // Something of this answer has gone out: no retry any more.
        released: bool,
        out: Vec<u8>,
        budget: Budget,
        sending: Option<Sending>,
        retrying: Option<Retrying>,
        // This answer is a retry's: its result is reported when it ends.
        retried: Option<Retrying>,
        done: bool,
    }
}

impl DetectBody {
    pub fn new(
        inner: UpstreamBody,
        framing: Framing,
        state: Arc<ProxyState>,
        plan: Arc<Plan>,
        sink: HitSink,
    ) -> Self {
        let watch = plan.selected.watch(plan.tools.clone());
        let sse = framing == Framing::Sse;
        DetectBody {
            inner,
            state,
            plan,
            sink,
            sse,
            units: Units::new(sse),
            reader: Reader::default(),
            watch,
            held: Vec::new(),
            released: false,
            out: Vec::new(),
            budget: Budget::default(),
            sending: None,
            retrying: None,
            retried: None,
            done: false,
        }
    }
}

impl Body for DetectBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        loop {
            if !this.out.is_empty() {
                let out = std::mem::take(this.out);
                return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
            }
            if *this.done {
                return Poll::Ready(None);
            }
            if let Some(sending) = this.sending.as_mut() {
                let result = ready!(sending.as_mut().poll(cx));
                *this.sending = None;
                let retrying = this.retrying.take();
                let framing_ok = |response: &Response<Incoming>| {
                    response.status().is_success()
                        && !response.headers().contains_key(header::CONTENT_ENCODING)
                        && (Framing::of_headers(response.headers()) == Framing::Sse) == *this.sse
                };
                match result {
                    Ok(response) if framing_ok(&response) => {
                        this.held.clear();
                        this.inner.as_mut().resume(response.into_body());
                        *this.watch = this.plan.selected.watch(this.plan.tools.clone());
                        *this.reader = Reader::default();
                        *this.units = Units::new(*this.sse);
                        *this.retried = retrying;
                        continue;
                    }
                    other => {
                        // The retry failed: deliver what the first answer had, well-formed.
                        let why = match other {
                            Ok(response) => format!("the retry answered {}", response.status()),
                            Err(error) => format!("the retry failed: {error:?}"),
                        };
                        tracing::warn!("detect: {why}; the first answer's start is delivered");
                        if let Some(retrying) = retrying {
                            report(
                                this.state,
                                this.sink,
                                &this.plan.selected,
                                &retrying.finding,
                                "retry failed",
                                retrying.first_answer,
                                why,
                            );
                            this.out.append(this.held);
                            if !this.reader.ended {
                                let ending = this
                                    .reader
                                    .stop_ending(this.plan.endpoint, &retrying.finding.rule_id);
                                this.out.extend(ending);
                            }
                        }
                        *this.done = true;
                        continue;
                    }
                }
            }
            let ended = match ready!(this.inner.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        this.units.push(&data);
                        false
                    }
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                Some(Err(error)) => {
                    this.out.append(this.held);
                    if this.out.is_empty() {
                        return Poll::Ready(Some(Err(error)));
                    }
                    *this.done = true;
                    continue;
                }
                None => true,
            };
            // Every whole unit, then (at the end) what is left.
            let mut units = Vec::new();
            while let Some(unit) = this.units.next_unit() {
                units.push(unit);
            }
            if ended {
                // What is left (or nothing): the unit the end of the answer is judged on.
                units.push(this.units.rest());
            }
            let last = units.len().saturating_sub(1);
            for (number, unit) in units.into_iter().enumerate() {
                if *this.sse {
                    this.reader.sse_event(this.plan.endpoint, &unit, this.watch);
                } else {
                    this.reader
                        .ndjson_line(this.plan.endpoint, &unit, this.watch);
                }
                if ended && number == last {
                    this.reader.cut_off(this.watch);
                }
                let findings = this.watch.take_findings();
                let verdict = if findings.is_empty() {
                    Verdict::Deliver
                } else {
                    decide(
                        this.state,
                        this.sink,
                        this.plan,
                        this.budget,
                        findings,
                        !*this.released && this.plan.resend.is_some(),
                        this.watch.answer(),
                    )
                };
                match verdict {
                    Verdict::Retry(finding) => {
                        match this.plan.retry_request(&finding) {
                            Ok(request) => {
                                this.budget.spend(finding.index);
                                this.state.stats.retries.fetch_add(1, Ordering::Relaxed);
                                // Dropping the body cancels the first generation before the
                                // retry queues behind it.
                                this.inner.as_mut().cancel();
                                // Kept until the retry answers, in case it cannot.
                                this.held.extend(&unit);
                                let first_answer = this.watch.answer().to_string();
                                if let Some(earlier) = this.retried.take() {
                                    // A retried answer failed again and retries once more.
                                    report(
                                        this.state,
                                        this.sink,
                                        &this.plan.selected,
                                        &earlier.finding,
                                        "retry",
                                        earlier.first_answer,
                                        first_answer.clone(),
                                    );
                                }
                                *this.retrying = Some(Retrying {
                                    finding,
                                    first_answer,
                                });
                                let state = this.state.clone();
                                *this.sending =
                                    Some(Box::pin(
                                        async move { state.upstream.send(request).await },
                                    ));
                                break;
                            }
                            Err(why) => {
                                tracing::warn!("detect: cannot retry: {why}");
                                report(
                                    this.state,
                                    this.sink,
                                    &this.plan.selected,
                                    &finding,
                                    "delivered",
                                    this.watch.answer().to_string(),
                                    format!("no retry: {why}"),
                                );
                            }
                        }
                    }
                    Verdict::Stop(finding) => {
                        let at = this.watch.answer().len();
                        report(
                            this.state,
                            this.sink,
                            &this.plan.selected,
                            &finding,
                            "stop",
                            this.watch.answer().to_string(),
                            format!("stopped after {at} bytes of text"),
                        );
                        this.out.append(this.held);
                        this.out.extend(&unit);
                        if !this.reader.ended {
                            let ending = this
                                .reader
                                .stop_ending(this.plan.endpoint, &finding.rule_id);
                            this.out.extend(ending);
                        }
                        this.inner.as_mut().cancel();
                        this.inner.as_mut().mark_blocked();
                        *this.done = true;
                        finish_retried(
                            this.state,
                            this.sink,
                            this.plan,
                            this.retried,
                            this.watch,
                            false,
                        );
                        break;
                    }
                    Verdict::Deliver => {}
                }
                if *this.released {
                    this.out.extend(&unit);
                } else if this.watch.holding() && !ended && this.held.len() < MAX_HELD {
                    this.held.extend(&unit);
                } else {
                    this.out.append(this.held);
                    this.out.extend(&unit);
                    *this.released = true;
                }
            }
            if this.sending.is_some() || *this.done {
                continue;
            }
            if ended {
                this.out.append(this.held);
                finish_retried(
                    this.state,
                    this.sink,
                    this.plan,
                    this.retried,
                    this.watch,
                    true,
                );
                *this.done = true;
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.out.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

impl Blockable for DetectBody {
    fn mark_blocked(self: Pin<&mut Self>) {
        let mut this = self.project();
        this.inner.as_mut().cancel();
        this.inner.mark_blocked();
        *this.done = true;
    }
}

/// A retried answer ended: audit the retry with both answers, and count it a success when no
/// enforced rule failed it.
fn finish_retried(
    state: &ProxyState,
    sink: &HitSink,
    plan: &Plan,
    retried: &mut Option<Retrying>,
    watch: &Watch,
    clean: bool,
) {
    let Some(retried) = retried.take() else {
        return;
    };
    // Findings of the retried answer were reported as they came; a clean end is one where
    // no enforced rule fired.
    let failed_again = !clean || watch.failed();
    if !failed_again {
        state
            .stats
            .retries_succeeded
            .fetch_add(1, Ordering::Relaxed);
    }
    report(
        state,
        sink,
        &plan.selected,
        &retried.finding,
        if failed_again {
            "retry (the retried answer failed too)"
        } else {
            "retry"
        },
        retried.first_answer,
        watch.answer().to_string(),
    );
}

/// The most bytes of units held back while a retry could still happen; past it the answer
/// goes out (an upstream sending endless empty chunks must not grow the proxy's memory).
const MAX_HELD: usize = 1 << 20;

/// Largest whole answer read to check it; larger ones are delivered unchecked.
const MAX_WHOLE: usize = 64 << 20;

/// A whole (`"stream": false`) answer under `detect` rules: checked, retried (each retry's
/// answer read whole too) or cut, before anything is sent. Returns the bytes to deliver.
pub async fn whole(state: &ProxyState, plan: &Plan, sink: &HitSink, first: Bytes) -> Bytes {
    let mut bytes = first;
    let mut budget = Budget::default();
    let mut retried: Option<Retrying> = None;
    loop {
        let Ok(mut answer) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            return bytes;
        };
        let mut watch = plan.selected.watch(plan.tools.clone());
        answer::whole(plan.endpoint, &answer, &mut watch);
        let findings = watch.take_findings();
        let verdict = decide(
            state,
            sink,
            plan,
            &budget,
            findings,
            plan.resend.is_some(),
            watch.answer(),
        );
        match verdict {
            Verdict::Deliver => {
                finish_retried(state, sink, plan, &mut retried, &watch, true);
                return bytes;
            }
            Verdict::Stop(finding) => {
                report(
                    state,
                    sink,
                    &plan.selected,
                    &finding,
                    "stop",
                    watch.answer().to_string(),
                    format!("cut after {} bytes of text", finding.at),
                );
                finish_retried(state, sink, plan, &mut retried, &watch, false);
                answer::stop_whole(plan.endpoint, &mut answer, finding.at, &finding.rule_id);
                return serde_json::to_vec(&answer)
                    .map(Bytes::from)
                    .unwrap_or(bytes);
            }
            Verdict::Retry(finding) => {
                let request = match plan.retry_request(&finding) {
                    Ok(request) => request,
                    Err(why) => {
                        report(
                            state,
                            sink,
                            &plan.selected,
                            &finding,
                            "delivered",
                            watch.answer().to_string(),
                            format!("no retry: {why}"),
                        );
                        return bytes;
                    }
                };
                budget.spend(finding.index);
                state.stats.retries.fetch_add(1, Ordering::Relaxed);
                if let Some(earlier) = retried.take() {
                    report(
                        state,
                        sink,
                        &plan.selected,
                        &earlier.finding,
                        "retry",
                        earlier.first_answer,
                        watch.answer().to_string(),
                    );
                }
                let first_answer = watch.answer().to_string();
                let next = match state.upstream.send(request).await {
                    Ok(response) if response.status().is_success() => {
                        Limited::new(response.into_body(), MAX_WHOLE)
                            .collect()
                            .await
                            .map(|c| c.to_bytes())
                            .map_err(|e| e.to_string())
                    }
                    Ok(response) => Err(format!("the retry answered {}", response.status())),
                    Err(error) => Err(format!("the retry failed: {error:?}")),
                };
                match next {
                    Ok(next) => {
                        bytes = next;
                        retried = Some(Retrying {
                            finding,
                            first_answer,
                        });
                    }
                    Err(why) => {
                        tracing::warn!("detect: {why}; the first answer is delivered");
                        report(
                            state,
                            sink,
                            &plan.selected,
                            &finding,
                            "retry failed",
                            first_answer,
                            why,
                        );
                        return bytes;
                    }
                }
            }
        }
    }
}
