use super::*;
use chrono::TimeZone;

fn turn(id: &str, speaker: &str, role: Role, text: &str) -> Turn {
    Turn {
        event_id: id.into(),
        time: Utc.with_ymd_and_hms(2023, 5, 8, 13, 56, 0).unwrap(),
        role,
        speaker: speaker.into(),
        text: text.into(),
    }
}

fn conversation() -> Vec<Turn> {
    vec![
        turn(
            "e1",
            "Caroline",
            Role::User,
            "Hey Mel! Good to see you! How have you been?",
        ),
        turn(
            "e2",
            "Melanie",
            Role::User,
            "Hey Caroline! I'm swamped with the kids & work. What's up with you?",
        ),
        turn(
            "e3",
            "Caroline",
            Role::User,
            "I went to a LGBTQ support group yesterday and it was so powerful.",
        ),
        turn(
            "e4",
            "Melanie",
            Role::User,
            "Wow, that's cool! What kind of music do you like?",
        ),
        turn(
            "e5",
            "Caroline",
            Role::User,
            "I love classical music, especially Bach. Thanks!",
        ),
    ]
}

fn run(kind: RecordKind, turns: &[Turn], ended: bool) -> Vec<Candidate> {
    BuiltinExtractor
        .extract(&Input {
            kind,
            turns,
            context: &[],
            session_ended: ended,
            state: None,
        })
        .unwrap()
}

#[test]
fn facts_are_attributed_dated_and_sourced() {
    let facts = run(RecordKind::Fact, &conversation(), false);
    let texts: Vec<&str> = facts.iter().map(|c| c.text.as_str()).collect();
    assert!(
        texts.contains(
            &"Caroline went to a LGBTQ support group on 7 May 2023 and it was so powerful."
        ),
        "{texts:#?}"
    );
    assert!(
        texts.contains(&"Melanie is swamped with the kids & work."),
        "{texts:#?}"
    );
    assert!(
        texts
            .iter()
            .all(|t| !t.contains(" I ") && !t.ends_with('?')),
        "{texts:#?}"
    );
    let support = facts
        .iter()
        .find(|c| c.text.contains("support group"))
        .unwrap();
    assert_eq!(support.source_event_ids, ["e3"]);
    assert_eq!(
        support.valid_from,
        Utc.with_ymd_and_hms(2023, 5, 7, 0, 0, 0).unwrap()
    );
}

#[test]
fn preferences_carry_their_context() {
    let prefs = run(RecordKind::Preference, &conversation(), false);
    assert_eq!(prefs.len(), 1, "{prefs:#?}");
    assert_eq!(
        prefs[0].text,
        "Caroline loves classical music, especially Bach (said on 8 May 2023, when asked \"What kind of music do you like?\")"
    );
    assert_eq!(
        prefs[0].slot,
        Some(Slot::Exclusive(
            "preference:caroline:classical music".into()
        ))
    );
}

#[test]
fn summary_names_people_topics_and_key_points() {
    let summary = run(RecordKind::Summary, &conversation(), true);
    assert_eq!(summary.len(), 1);
    let text = &summary[0].text;
    assert!(
        text.starts_with(
            "Conversation between Caroline and Melanie on 8 May 2023 (5 turns, ended)."
        ),
        "{text}"
    );
    assert!(text.contains("support group on 7 May 2023"), "{text}");
    assert_eq!(summary[0].slot, Some(Slot::Running("summary".into())));
    assert!(summary[0].source_event_ids.contains(&"e3".to_string()));
}

#[test]
fn episode_has_situation_actions_and_outcome() {
    let turns = vec![
        turn(
            "u1",
            "Ana",
            Role::User,
            "My flight to Lisbon on Friday was cancelled and I need a new one.",
        ),
        turn(
            "t1",
            "booking-tool",
            Role::Tool,
            "{\"status\": \"rebooked\"}",
        ),
        turn(
            "a1",
            "assistant",
            Role::Assistant,
            "I rebooked Ana on flight TP 1351 departing Saturday at 9:40.",
        ),
        turn(
            "u2",
            "Ana",
            Role::User,
            "Perfect, I prefer morning flights anyway.",
        ),
    ];
    let episode = run(RecordKind::Episode, &turns, true);
    let text = &episode[0].text;
    assert!(
        text.contains(
            "Situation: Ana's flight to Lisbon on Friday was cancelled and Ana needs a new one."
        ),
        "{text}"
    );
    assert!(
        text.contains("Actions: Assistant rebooked Ana on flight TP 1351"),
        "{text}"
    );
    assert!(
        text.contains("Ana prefers morning flights anyway."),
        "{text}"
    );
    assert_eq!(episode[0].source_event_ids, ["u1", "a1", "u2"]);
}

#[test]
fn nothing_to_say_gives_nothing() {
    let turns = vec![turn("e1", "Jo", Role::User, "Hi! Thanks so much!")];
    assert!(run(RecordKind::Fact, &turns, false).is_empty());
    assert!(run(RecordKind::Episode, &turns, true).is_empty());
    assert_eq!(run(RecordKind::Summary, &turns, true).len(), 1);
}

proptest::proptest! {
    /// Any text, in any script, extracts without panicking, and every record names its source.
    #[test]
    fn never_panics(text in "\\PC{0,200}", speaker in "\\PC{1,12}") {
        let turns = vec![turn("e1", &speaker, Role::User, &text)];
        for kind in [RecordKind::Fact, RecordKind::Preference, RecordKind::Summary, RecordKind::Episode] {
            for candidate in run(kind, &turns, true) {
                proptest::prop_assert_eq!(&candidate.source_event_ids, &vec!["e1".to_string()]);
            }
        }
    }

    #[test]
    fn words_with_accents_survive(word in "[a-zé]{1,8}") {
        let text = format!("I visited the café {word} yesterday with my family.");
        let facts = run(RecordKind::Fact, &[turn("e1", "Zoë", Role::User, &text)], false);
        proptest::prop_assert!(facts.iter().all(|f| f.text.starts_with("Zoë visited the café")));
    }
}

#[test]
fn summaries_fold_new_turns_into_their_state() {
    let turns = conversation();
    let one_shot = run(RecordKind::Summary, &turns, true);
    let first = BuiltinExtractor
        .extract(&Input {
            kind: RecordKind::Summary,
            turns: &turns[..3],
            context: &[],
            session_ended: false,
            state: None,
        })
        .unwrap();
    assert!(
        first[0].text.starts_with("Ongoing conversation"),
        "{}",
        first[0].text
    );
    let second = BuiltinExtractor
        .extract(&Input {
            kind: RecordKind::Summary,
            turns: &turns[3..],
            context: &turns[..3],
            session_ended: true,
            state: first[0].state.as_deref(),
        })
        .unwrap();
    assert_eq!(second[0].text, one_shot[0].text);
    assert_eq!(second[0].source_event_ids, one_shot[0].source_event_ids);
}

#[test]
fn short_self_statements_become_facts_about_the_speaker() {
    let said = |text: &str| {
        let turns = [
            turn("e1", "Maria", Role::User, text),
            turn("e2", "assistant", Role::Assistant, "Got it."),
        ];
        let facts = run(RecordKind::Fact, &turns, false);
        let prefs = run(RecordKind::Preference, &turns, false);
        (
            facts.into_iter().map(|c| c.text).collect::<Vec<_>>(),
            prefs.into_iter().map(|c| c.text).collect::<Vec<_>>(),
        )
    };
    assert_eq!(said("I'm a pharmacist.").0, ["Maria is a pharmacist."]);
    assert_eq!(said("I have three cats.").0, ["Maria has three cats."]);
    assert_eq!(said("Btw, I work from home.").0, ["Maria works from home."]);
    // Negation is kept, in facts and in preferences.
    assert_eq!(said("I don't drive.").0, ["Maria doesn't drive."]);
    assert_eq!(said("I rarely eat out.").0, ["Maria rarely eats out."]);
    let (facts, prefs) = said("I'm not a fan of spicy food.");
    assert_eq!(facts, ["Maria is not a fan of spicy food."]);
    assert_eq!(
        prefs,
        ["Maria is not a fan of spicy food (said on 8 May 2023)"]
    );
    // Likes and standing instructions reach preferences, about the speaker.
    assert_eq!(
        said("I love sailing.").1,
        ["Maria loves sailing (said on 8 May 2023)"]
    );
    assert_eq!(
        said("No emojis, please.").1,
        ["Maria does not want emojis in answers (said on 8 May 2023)"]
    );
    // Small talk, questions and one-off requests leave nothing.
    for chat in [
        "I'm fine, thanks.",
        "I have a question.",
        "I'm just curious.",
        "I love it!",
        "I don't know.",
        "Write me a poem about autumn.",
        "Can you help me?",
    ] {
        assert_eq!(said(chat), (vec![], vec![]), "{chat}");
    }
}

#[test]
fn a_diet_or_an_occupation_is_one_value_at_a_time() {
    let slot = |text: &str| state_slot(text, "Maria");
    let diet = Some(Slot::Exclusive("diet:maria".into()));
    assert_eq!(slot("Maria is vegetarian."), diet);
    assert_eq!(slot("Maria is vegan now."), diet);
    assert_eq!(slot("Maria is not vegetarian anymore."), diet);
    let job = Some(Slot::Exclusive("job:maria".into()));
    assert_eq!(slot("Maria is a pharmacist."), job);
    assert_eq!(slot("Maria is a retired firefighter."), job);
    assert_eq!(slot("Maria works as a teacher."), job);
    assert_eq!(slot("Maria is a big fan of jazz."), None);
    assert_eq!(slot("Maria is vegetarianism's fan."), None);
}
