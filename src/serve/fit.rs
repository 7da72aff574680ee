//! Fitting a chat into the context, as Ollama does: when the rendered conversation is longer
//! than the context minus room for the answer, whole old messages are dropped — never a system
//! message, never the last message — until it fits.
//!
//! The conversation kept always starts (after the system messages) at a `user` message, so
//! templates that insist on alternating roles (Mistral's raises an error otherwise) still
//! render it, and a tool result is never kept without the assistant call it answers. Only when
//! the system messages and the last message alone cannot fit is the request refused.
//!
//! Sans-IO: the caller passes how to render a list of messages and how to count a prompt's
//! tokens, so this is tested without a model.

/// What was kept of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fitted {
    /// Indices (into the original list) of the messages kept, in order.
    pub kept: Vec<usize>,
    /// The rendered prompt of the kept messages.
    pub prompt: String,
    /// Its length in tokens.
    pub tokens: usize,
    /// Messages dropped.
    pub dropped: usize,
}

/// Fits the conversation whose message roles are `roles` into `limit` tokens with `room`
/// left for the answer.
///
/// `render` renders the messages at the given indices (in order); `count` counts a prompt's
/// tokens. Renders the whole conversation first; only when that is too long does it search
/// (by bisection, a few renders) for the fewest dropped messages that fit.
///
/// Errors: a render error, or a prompt that does not fit even with every droppable message
/// gone (the message says how long it is).
pub fn fit_messages<R, C>(
    roles: &[&str],
    limit: usize,
    room: usize,
    mut render: R,
    mut count: C,
) -> Result<Fitted, String>
where
    R: FnMut(&[usize]) -> Result<String, String>,
    C: FnMut(&str) -> usize,
{
    let all: Vec<usize> = (0..roles.len()).collect();
    let prompt = render(&all)?;
    let tokens = count(&prompt);
    if tokens + room <= limit || roles.len() <= 1 {
        return check(
            Fitted {
                kept: all,
                prompt,
                tokens,
                dropped: 0,
            },
            limit,
        );
    }
    let last = roles.len() - 1;
    // The messages that may go, oldest first.
    let droppable: Vec<usize> = (0..last).filter(|&i| roles[i] != "system").collect();
    // Where the kept history may start: at a user message, or after every droppable one.
    let mut cuts: Vec<usize> = (1..droppable.len())
        .filter(|&j| roles[droppable[j]] == "user")
        .collect();
    cuts.push(droppable.len());
    let keep = |cut: usize| -> Vec<usize> {
        let gone = &droppable[..cut];
        (0..roles.len()).filter(|i| !gone.contains(i)).collect()
    };
    // Bisection over the cut points for the first that fits: fewer dropped messages fit less.
    let (mut lo, mut hi) = (0, cuts.len() - 1);
    let mut best: Option<Fitted> = None;
    while lo <= hi {
        let mid = lo + (hi - lo) / 2;
        let kept = keep(cuts[mid]);
        let prompt = render(&kept)?;
        let tokens = count(&prompt);
        let fits = tokens + room <= limit;
        if fits || mid == cuts.len() - 1 {
            let candidate = Fitted {
                kept,
                prompt,
                tokens,
                dropped: cuts[mid],
            };
            // The last cut point is the fallback even when it does not leave the full room.
            if fits || best.is_none() {
                best = Some(candidate);
            }
        }
        if fits {
            if mid == 0 {
                break;
            }
            hi = mid - 1;
        } else {
            lo = mid + 1;
        }
    }
    match best {
        Some(fitted) => check(fitted, limit),
        None => Err("cannot fit the conversation into the context".into()),
    }
}

/// The one refusal: the kept prompt leaves no room for even one token.
fn check(fitted: Fitted, limit: usize) -> Result<Fitted, String> {
    if fitted.tokens >= limit {
        return Err(format!(
            "the prompt is {} tokens, more than the context length of {limit}, even with every \
             message but the system messages and the last one dropped",
            fitted.tokens
        ));
    }
    Ok(fitted)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Renders "role:len;" per message, counting one token per byte of `sizes`.
    fn run(roles: &[&str], sizes: &[usize], limit: usize, room: usize) -> Result<Fitted, String> {
        let mut renders = 0;
        let out = fit_messages(
            roles,
            limit,
            room,
            |kept| {
                renders += 1;
                Ok(kept.iter().map(|&i| "x".repeat(sizes[i])).collect())
            },
            str::len,
        );
        assert!(
            renders <= 2 + roles.len().ilog2() as usize + 1,
            "{renders} renders"
        );
        out
    }

    #[test]
    fn a_conversation_that_fits_is_rendered_once_and_kept_whole() {
        let f = run(
            &["system", "user", "assistant", "user"],
            &[10, 10, 10, 10],
            100,
            20,
        )
        .unwrap();
        assert_eq!(f.kept, vec![0, 1, 2, 3]);
        assert_eq!(f.dropped, 0);
        assert_eq!(f.tokens, 40);
    }

    #[test]
    fn the_oldest_turns_go_first_and_system_and_last_stay() {
        let roles = ["system", "user", "assistant", "user", "assistant", "user"];
        let sizes = [10, 30, 30, 30, 30, 10];
        // 140 tokens, limit 100 with 20 of room: 80 at most.
        let f = run(&roles, &sizes, 100, 20).unwrap();
        assert_eq!(f.kept, vec![0, 3, 4, 5]);
        assert_eq!(f.dropped, 2);
        assert_eq!(f.tokens, 80);
    }

    #[test]
    fn the_kept_history_starts_at_a_user_message() {
        // Dropping one message would fit, but the history would start with the assistant.
        let roles = ["system", "user", "assistant", "tool", "user"];
        let sizes = [10, 20, 5, 5, 10];
        let f = run(&roles, &sizes, 45, 0).unwrap();
        assert_eq!(f.kept, vec![0, 4]);
        assert_eq!(f.dropped, 3);
    }

    #[test]
    fn system_messages_anywhere_are_kept() {
        let roles = ["user", "system", "assistant", "user"];
        let sizes = [50, 5, 50, 10];
        let f = run(&roles, &sizes, 40, 5).unwrap();
        assert_eq!(f.kept, vec![1, 3]);
    }

    #[test]
    fn when_only_system_and_last_remain_the_room_may_shrink() {
        let roles = ["system", "user", "assistant", "user"];
        let sizes = [10, 30, 30, 70];
        // 80 tokens kept, limit 100, room 40: fits the context but not the room — served.
        let f = run(&roles, &sizes, 100, 40).unwrap();
        assert_eq!(f.kept, vec![0, 3]);
        assert_eq!(f.tokens, 80);
    }

    #[test]
    fn a_last_message_that_cannot_fit_is_refused_with_its_length() {
        let roles = ["system", "user", "assistant", "user"];
        let sizes = [10, 30, 30, 95];
        let err = run(&roles, &sizes, 100, 10).unwrap_err();
        assert!(err.contains("105 tokens"), "{err}");
        assert!(err.contains("context length of 100"), "{err}");
        // A single message too long for the context.
        let err = run(&["user"], &[120], 100, 10).unwrap_err();
        assert!(err.contains("120 tokens"), "{err}");
    }

    #[test]
    fn the_fewest_messages_are_dropped_for_every_size() {
        // Exhaustive over small cases against a linear scan.
        let roles = [
            "system",
            "user",
            "assistant",
            "user",
            "assistant",
            "user",
            "assistant",
            "user",
        ];
        for limit in (20..200).step_by(7) {
            let sizes = [7, 13, 29, 11, 17, 23, 5, 9];
            let got = run(&roles, &sizes, limit, 8);
            let total = |kept: &[usize]| kept.iter().map(|&i| sizes[i]).sum::<usize>();
            let droppable = [1, 2, 3, 4, 5, 6];
            let starts = [0, 2, 4, 6];
            let expect = starts
                .iter()
                .map(|&cut| {
                    let gone = &droppable[..cut];
                    (0..8).filter(|i| !gone.contains(i)).collect::<Vec<_>>()
                })
                .find(|k| total(k) + 8 <= limit)
                .unwrap_or_else(|| vec![0, 7]);
            match got {
                Ok(f) => assert_eq!(f.kept, expect, "limit {limit}"),
                Err(_) => assert!(total(&expect) >= limit, "limit {limit}"),
            }
        }
    }
}
