//! The chat `minerva run MODEL` opens on a terminal: line editing and input history (rustyline),
//! the conversation sent whole each turn (the engine's prompt cache keeps what the previous turns
//! computed, so only the new turn is evaluated), answers streamed, Ctrl-C stopping the answer
//! and not the program, and commands `/system TEXT`, `/clear`, `/help`, `/exit`.

use std::process::ExitCode;

use minerva_runtime::{
    ChatMessage, Error, GenerationRequest, Input, ModelHandle, Result, Role, Usage,
};
use rustyline::error::ReadlineError;
use rustyline::DefaultEditor;

use super::{stream_answer, RunArgs};

const HELP: &str = "/system TEXT  set the system message (/system alone removes it)
/clear        forget the conversation
/exit         quit (also /bye or Ctrl-D)
Ctrl-C stops an answer; at the prompt it clears the line.";

/// A chat command or a message.
#[derive(Debug, PartialEq)]
enum Line<'a> {
    Message(&'a str),
    System(Option<&'a str>),
    Clear,
    Help,
    Exit,
    Unknown(&'a str),
}

fn parse(line: &str) -> Line<'_> {
    let line = line.trim();
    let Some(command) = line.strip_prefix('/') else {
        return Line::Message(line);
    };
    let (name, rest) = command
        .split_once(char::is_whitespace)
        .unwrap_or((command, ""));
    match name {
        "system" | "set-system" => Line::System(Some(rest.trim()).filter(|r| !r.is_empty())),
        "clear" => Line::Clear,
        "help" | "?" => Line::Help,
        "exit" | "quit" | "bye" => Line::Exit,
        _ => Line::Unknown(name),
    }
}

/// Chat until `/exit` or end of input.
pub async fn run(model: &ModelHandle, args: &RunArgs) -> Result<ExitCode> {
    let editor_error = |e: ReadlineError| Error::engine("terminal", e.to_string());
    let mut editor = Some(DefaultEditor::new().map_err(editor_error)?);
    let mut system = args.system.clone();
    let mut conversation: Vec<ChatMessage> = Vec::new();
    eprintln!(
        "Chatting with {} ({} engine). /help lists the commands; Ctrl-D quits.",
        model.entry().config.id,
        model.engine().name()
    );
    loop {
        // The editor blocks on the terminal: on a thread of its own, handed back each time.
        let mut taken = editor
            .take()
            .ok_or_else(|| Error::engine("terminal", "no editor"))?;
        let (returned, line) = tokio::task::spawn_blocking(move || {
            let line = taken.readline(">>> ");
            (taken, line)
        })
        .await
        .map_err(|e| Error::engine("terminal", e.to_string()))?;
        let editor = editor.insert(returned);
        let line = match line {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(editor_error(e)),
        };
        if !line.trim().is_empty() {
            let _ = editor.add_history_entry(line.trim());
        }
        let text = match parse(&line) {
            Line::Message("") => continue,
            Line::Message(text) => text,
            Line::System(text) => {
                system = text.map(str::to_string);
                eprintln!(
                    "(system message {})",
                    if system.is_some() { "set" } else { "removed" }
                );
                continue;
            }
            Line::Clear => {
                conversation.clear();
                eprintln!("(conversation cleared)");
                continue;
            }
            Line::Help => {
                eprintln!("{HELP}");
                continue;
            }
            Line::Exit => break,
            Line::Unknown(name) => {
                eprintln!("unknown command /{name}; /help lists them");
                continue;
            }
        };
        conversation.push(ChatMessage::new(Role::User, text));
        let mut messages: Vec<ChatMessage> = system
            .iter()
            .map(|s| ChatMessage::new(Role::System, s.clone()))
            .collect();
        messages.extend(conversation.iter().cloned());
        let mut request = GenerationRequest::new(Input::Chat(messages));
        args.apply(&mut request);
        let mut interrupt = Box::pin(async {
            let _ = tokio::signal::ctrl_c().await;
        });
        match stream_answer(model, request, Some(&mut interrupt)).await {
            Ok(answer) => {
                conversation.push(ChatMessage::new(Role::Assistant, answer.text));
                if answer.interrupted {
                    eprintln!("[stopped]");
                } else {
                    eprintln!("{}", stats(&answer.usage, answer.generation_time));
                }
            }
            Err(e) => {
                conversation.pop();
                eprintln!("error: {e}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One line on the answer: tokens, speed, and how much of the prompt came from the cache.
fn stats(usage: &Usage, took: std::time::Duration) -> String {
    let seconds = took.as_secs_f64().max(1e-6);
    format!(
        "[{} tokens in {:.1} s, {:.1} tok/s; prompt {} tokens, {} cached]",
        usage.completion_tokens,
        seconds,
        f64::from(usage.completion_tokens) / seconds,
        usage.prompt_tokens,
        usage.cached_tokens
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_commands_or_messages() {
        assert_eq!(parse(" hello "), Line::Message("hello"));
        assert_eq!(parse("/system Be brief."), Line::System(Some("Be brief.")));
        assert_eq!(parse("/system"), Line::System(None));
        assert_eq!(parse("/clear"), Line::Clear);
        assert_eq!(parse("/bye"), Line::Exit);
        assert_eq!(parse("/frobnicate x"), Line::Unknown("frobnicate"));
    }
}
