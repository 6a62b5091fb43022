//! `ops show` and `ops refetch` for people, rendered from the API's JSON (whichever source
//! gave it): the connection and its next step, stuck reasons, the last journal entries, the
//! last step runs, the coverage of the last 14 days.

use serde_json::Value;

use super::json::text;

/// Journal entries shown (the newest).
const JOURNAL_SHOWN: usize = 15;

/// What runs next, from the connection's row (docs/actions.md#actions).
fn next_step(c: &Value, stuck: &[Value]) -> String {
    let state = c["state"].as_str().unwrap_or("");
    if !stuck.is_empty() {
        return "stuck: see the reasons above; `tributary ops replay` runs its step again"
            .to_owned();
    }
    match state {
        "active" if c["paused"] == true => "nothing: paused (`tributary ops resume`)".to_owned(),
        "active" => format!(
            "transfer due at {} (token refresh due at {})",
            text(&c["nextSyncAt"]),
            text(&c["refreshDueAt"])
        ),
        "refreshing" => "a token refresh is running".to_owned(),
        "invited" | "authorizing" => "waiting for the user to authorize".to_owned(),
        _ => "none: the connection has ended".to_owned(),
    }
}

/// The whole view.
pub fn render(view: &Value) -> String {
    let c = &view["connection"];
    let stuck: Vec<Value> = view["stuck"].as_array().cloned().unwrap_or_default();
    let mut out = format!(
        "connection {}\n  user {}  partner {}  state {}{}\n",
        text(&c["id"]),
        text(&c["userId"]),
        text(&c["partner"]),
        text(&c["state"]),
        if c["paused"] == true {
            "  (paused)"
        } else {
            ""
        }
    );
    out.push_str(&format!(
        "  last transfer {}  fetched through {}  data {} .. {}\n",
        text(&c["lastSyncAt"]),
        text(&c["fetchedThrough"]),
        text(&c["earliestDataTime"]),
        text(&c["latestDataTime"])
    ));
    if !c["lastError"].is_null() {
        out.push_str(&format!(
            "  last error {}: {}  (failures {}, since {})\n",
            text(&c["lastError"]["code"]),
            text(&c["lastError"]["message"]),
            text(&c["failureCount"]),
            text(&c["failingSince"])
        ));
    }
    let reasons: Vec<String> = stuck.iter().map(text).collect();
    out.push_str(&format!(
        "  stuck {}\n  next {}\n",
        if reasons.is_empty() {
            "no".to_owned()
        } else {
            reasons.join(", ")
        },
        next_step(c, &stuck)
    ));

    let journal = view["journal"].as_array().cloned().unwrap_or_default();
    out.push_str(&format!(
        "\nJOURNAL (last {} of {})\n{:>5}  {:<25} {:<24} {:<26} {:<24} {}\n",
        journal.len().min(JOURNAL_SHOWN),
        journal.len(),
        "SEQ",
        "AT",
        "EVENT",
        "FROM -> TO",
        "ACTOR",
        "REASON"
    ));
    for e in journal.iter().rev().take(JOURNAL_SHOWN).rev() {
        out.push_str(&format!(
            "{:>5}  {:<25} {:<24} {:<26} {:<24} {}\n",
            text(&e["seq"]),
            text(&e["at"]),
            text(&e["event"]),
            format!("{} -> {}", text(&e["from"]), text(&e["to"])),
            text(&e["actor"]),
            text(&e["reason"])
        ));
    }

    let runs = view["runs"]["runs"].as_array().cloned().unwrap_or_default();
    out.push_str(&format!(
        "\nRUNS (newest first)\n{:<8} {:<25} {:<10} {:>8} {:>8} {:>8} {:>8} {:>8}  {}\n",
        "STEP", "STARTED", "OUTCOME", "MS", "INSERTED", "UPDATED", "UNCHANGED", "WINDOWS", "ERROR"
    ));
    for r in &runs {
        out.push_str(&format!(
            "{:<8} {:<25} {:<10} {:>8} {:>8} {:>8} {:>8} {:>8}  {}\n",
            text(&r["step"]),
            text(&r["startedAt"]),
            text(&r["outcome"]),
            text(&r["durationMs"]),
            text(&r["inserted"]),
            text(&r["updated"]),
            text(&r["unchanged"]),
            text(&r["windows"]),
            text(&r["errorCode"])
        ));
    }

    let cov = &view["coverage"];
    out.push_str(&format!(
        "\nCOVERAGE {} .. {}\n  fetched {}\n",
        text(&cov["range"]["start"]),
        text(&cov["range"]["end"]),
        if cov["fetched"].is_null() {
            "nothing".to_owned()
        } else {
            format!(
                "{} .. {}",
                text(&cov["fetched"]["start"]),
                text(&cov["fetched"]["end"])
            )
        }
    ));
    for u in cov["unfetched"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  not fetched {} .. {}: {}{}\n",
            text(&u["start"]),
            text(&u["end"]),
            text(&u["reason"]),
            if u["lastErrorCode"].is_null() {
                String::new()
            } else {
                format!(
                    " (failing since {}: {})",
                    text(&u["failingSince"]),
                    text(&u["lastErrorCode"])
                )
            }
        ));
    }
    for t in cov["types"].as_array().into_iter().flatten() {
        let empty = t["empty"].as_array().map_or(0, Vec::len);
        out.push_str(&format!(
            "  {:<16} {:>8} records, {} stretch(es) over {} s with none from the partner\n",
            text(&t["type"]),
            text(&t["records"]),
            empty,
            text(&cov["gapSecs"])
        ));
    }
    out
}

/// A re-fetch's answer, one paragraph.
pub fn refetched(answer: &Value) -> String {
    let range = format!(
        "{} .. {}",
        text(&answer["range"]["start"]),
        text(&answer["range"]["end"])
    );
    if answer["dryRun"] == true {
        let p = &answer["preview"];
        return format!(
            "dry run of {range}: {} window(s) fetched, would insert {}, update {}, retire {}; \
             {} unchanged, {} skipped. Nothing was written.",
            text(&p["windows"]),
            text(&p["inserted"]),
            text(&p["updated"]),
            text(&p["retired"]),
            text(&p["unchanged"]),
            text(&p["skipped"])
        );
    }
    if answer["changed"] == true {
        format!(
            "re-fetch of {range}: cursor rewound from {} to {}; the transfer is due now",
            text(&answer["cursorWas"]),
            text(&answer["connection"]["fetchedThrough"])
        )
    } else {
        format!(
            "re-fetch of {range}: not fetched yet (cursor {}): nothing changed",
            text(&answer["cursorWas"])
        )
    }
}
