//! The action forms' `POST /ops/connections/{id}/{action}` (docs/actions.md#actions): the
//! same engine calls as the API's, with the signed-in operator as actor. Each answers with a
//! redirect back to the connection naming what happened (`done=` / `refused=` codes that the
//! page turns into its flash message; no free text travels in the URL).

use engine::store::{ConnectionAction, Reason, ReplayStep};
use poem::{
    Request, Response,
    web::{Data, Form, Path},
};
use serde::Deserialize;

use super::{
    BASE, Console,
    connection::{not_found, parse_id},
    html::{Flash, see_other},
    session::{forbidden, to_login},
};
use crate::problem::Problem;

/// An action's form.
pub struct ActionForm {
    /// The path segment (`replay`, `clear-error`, …).
    pub name: &'static str,
    /// "Reason to …".
    pub verb: &'static str,
    pub label: &'static str,
    pub help: &'static str,
    pub destructive: bool,
}

/// Every action a connection's page offers, in order.
pub const ACTIONS: [ActionForm; 5] = [
    ActionForm {
        name: "replay",
        verb: "replay",
        label: "Replay",
        help: "Runs the current step now: a transfer (clearing a lease left behind), a refresh \
               left stuck, or a revocation still owed.",
        destructive: false,
    },
    ActionForm {
        name: "pause",
        verb: "pause",
        label: "Pause",
        help: "No transfer or refresh until resumed; a running transfer stops at its next write.",
        destructive: false,
    },
    ActionForm {
        name: "resume",
        verb: "resume",
        label: "Resume",
        help: "Its overdue work is claimed at the dispatcher's next pass.",
        destructive: false,
    },
    ActionForm {
        name: "clear-error",
        verb: "clear the error",
        label: "Clear error",
        help: "Clears the last error and the failure streak; the schedule is left alone.",
        destructive: false,
    },
    ActionForm {
        name: "fail",
        verb: "fail",
        label: "Move to failed",
        help: "Drops the tokens, owes a revocation at the partner and notifies the patient: the \
               user must connect again.",
        destructive: true,
    },
];

/// The flash message of a redirect's codes; `None` for none or codes this page never sends.
pub fn flash(done: Option<&str>, changed: Option<&str>, refused: Option<&str>) -> Option<Flash> {
    if let Some(code) = refused {
        let text = match code {
            "step_in_flight" => {
                "Refused: a step runs right now (or is claimed); nothing was changed. Try again shortly."
            }
            "nothing_to_replay" => {
                "Refused: there is no step to run again (not active or refreshing, and no revocation owed)."
            }
            "paused" => {
                "Refused: its transfers are paused (the connection, its partner or everything). Resume first."
            }
            "invalid_transition" => "Refused: its state does not allow that action.",
            "conflict" => "Refused: the connection kept changing; nothing was changed. Try again.",
            "invalid_reason" => {
                "Refused: the reason must be one line of 1 to 500 characters, without a token, secret or email address."
            }
            _ => "Refused: the action failed; nothing was changed.",
        };
        return Some(Flash {
            ok: false,
            text: text.to_owned(),
        });
    }
    let unchanged = changed == Some("0");
    let text = match (done?, unchanged) {
        (_, true) => "Nothing to do: it already was so. Nothing was written.",
        ("replay-transfer", false) => {
            "Replayed: the transfer is due now; the dispatcher takes it at its next pass."
        }
        ("replay-refresh", false) => {
            "Replayed: the stale refresh was abandoned and a refresh is due now."
        }
        ("replay-revocation", false) => "Replayed: the partner revocation it owes is due now.",
        ("pause", false) => "Paused: no transfer or refresh until resumed.",
        ("resume", false) => "Resumed: its overdue work is claimed at the next pass.",
        ("clear-error", false) => "Cleared: the last error and the failure streak are gone.",
        ("fail", false) => "Moved to failed: tokens dropped, the patient notified.",
        _ => return None,
    };
    Some(Flash {
        ok: true,
        text: text.to_owned(),
    })
}

#[derive(Debug, Deserialize)]
pub struct ActionBody {
    csrf: Option<String>,
    reason: Option<String>,
}

#[poem::handler]
pub async fn act(
    req: &Request,
    Data(console): Data<&Console>,
    Path((raw, action)): Path<(String, String)>,
    Form(form): Form<ActionBody>,
) -> Response {
    if !console.origin_ok(req) {
        return forbidden(None);
    }
    let Some(session) = console.session(req) else {
        return to_login();
    };
    if !session.csrf_ok(form.csrf.as_deref()) {
        return forbidden(Some(&session));
    }
    let Some(id) = parse_id(&raw) else {
        return not_found(&session);
    };
    let back = |query: &str| see_other(&format!("{BASE}/connections/{id}?{query}"));
    let Ok(reason) = Reason::parse(form.reason.as_deref().unwrap_or_default()) else {
        return back("refused=invalid_reason");
    };
    let store = console.workflows.store();
    let actor = session.actor();
    let outcome = match action.as_str() {
        "replay" => {
            let settings = console.workflows.settings().actions();
            store
                .replay(id, &actor, &reason, &settings)
                .await
                .map(|replay| {
                    let done = match replay.step {
                        ReplayStep::Transfer => "replay-transfer",
                        ReplayStep::Refresh => "replay-refresh",
                        ReplayStep::Revocation => "replay-revocation",
                    };
                    (done, replay.changed)
                })
        }
        other => {
            let (done, action) = match other {
                "pause" => ("pause", ConnectionAction::Pause),
                "resume" => ("resume", ConnectionAction::Resume),
                "fail" => ("fail", ConnectionAction::Fail),
                "clear-error" => ("clear-error", ConnectionAction::ClearError),
                _ => return not_found(&session),
            };
            store
                .act_on(action, id, &actor, &reason)
                .await
                .map(|acted| (done, acted.changed))
        }
    };
    match outcome {
        Ok((done, changed)) => back(&format!("done={done}&changed={}", u8::from(changed))),
        Err(err) => {
            let problem = Problem::from(err);
            if problem.code == "not_found" {
                return not_found(&session);
            }
            if problem.status >= 500 {
                tracing::warn!(code = %problem.code, "a console action failed");
            }
            back(&format!("refused={}", problem.code))
        }
    }
}
