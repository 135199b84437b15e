//! The interactive chat menu: the seeds' chat client over a paxos-zmq cluster.
//!
//! Log in first, then: list users, create a channel, list channels, subscribe, publish,
//! send a private message, read a history, quit. Messages committed on the channels the
//! user subscribed to, and private messages to the user, arrive live from the proxy and
//! are printed **above** the prompt by rustyline's `ExternalPrinter`, so a half-typed
//! line is redrawn intact. Without a terminal (input from a pipe) the menu reads plain
//! lines and live messages are printed as they come.
//!
//! The menu runs on a blocking thread (the line editor blocks on the terminal) and
//! drives the async [`Session`] through the runtime's handle.

use proto::client::Target;
use proto::{Consistency, Op, Reply};
use rustyline::error::ReadlineError;
use rustyline::{DefaultEditor, ExternalPrinter};
use tokio::runtime::Handle;

use crate::args::Endpoints;
use crate::args::ask_password;
use crate::exit::Exit;
use crate::live::{Follower, LiveFeed, Reader, format_message, parse_target};
use crate::session::{Answer, CallOptions, Connection, Session};

/// What the menu needs to know.
#[derive(Debug, Clone)]
pub struct MenuConfig {
    /// Broker and proxy.
    pub endpoints: Endpoints,
    /// Request deadlines.
    pub options: CallOptions,
}

const MENU: &str = "\
=== Menu ===
1. List users
2. Create channel
3. List channels
4. Subscribe to a channel
5. Publish on a channel
6. Send a private message
7. History of a channel or @user
0. Quit";

/// Where live messages are printed.
enum Printer {
    /// Above the prompt of the line editor (a terminal).
    Editor(Box<dyn ExternalPrinter + Send>),
    /// Plain stdout (no terminal).
    Stdout,
}

impl Printer {
    fn print(&mut self, line: String) {
        match self {
            Printer::Editor(printer) => {
                if let Err(error) = printer.print(format!("{line}\n")) {
                    // The editor is gone (the menu is closing); stdout still works.
                    tracing::debug!(%error, "external printer failed");
                    println!("{line}");
                }
            }
            Printer::Stdout => println!("{line}"),
        }
    }
}

/// Prints the committed messages the feed's notices announce until its socket closes or
/// the task is aborted; they are read with `session` (the user's login, for the inbox).
async fn print_live(
    mut feed: LiveFeed,
    mut printer: Printer,
    mut session: Session,
    options: CallOptions,
) {
    let mut reader = Reader::new();
    while let Some(next) = feed.next().await {
        match next {
            Ok(notice) => match reader.read(&mut session, &notice, &options).await {
                Ok(messages) => {
                    for message in messages {
                        printer.print(format!("  << {}", format_message(&message)));
                    }
                }
                Err(error) => tracing::warn!(%error, "cannot read a live message"),
            },
            Err(error) => tracing::warn!(%error, "skipping a live message"),
        }
    }
}

struct Menu<'a> {
    editor: DefaultEditor,
    session: Session,
    options: CallOptions,
    handle: &'a Handle,
    follower: Follower,
}

impl Menu<'_> {
    /// A trimmed line, or `None` on end of input or Ctrl-C / Ctrl-D.
    fn ask(&mut self, prompt: &str) -> Option<String> {
        match self.editor.readline(prompt) {
            Ok(line) => {
                let line = line.trim().to_owned();
                if !line.is_empty() {
                    // History is a convenience; a failure to record it changes nothing.
                    let _ = self.editor.add_history_entry(line.as_str());
                }
                Some(line)
            }
            Err(ReadlineError::Interrupted | ReadlineError::Eof) => None,
            Err(error) => {
                eprintln!("error: reading input: {error}");
                None
            }
        }
    }

    /// Asks until a non-empty answer (or `None` at end of input).
    fn ask_non_empty(&mut self, prompt: &str) -> Option<String> {
        loop {
            let answer = self.ask(prompt)?;
            if !answer.is_empty() {
                return Some(answer);
            }
        }
    }

    /// Sends one request; prints the error and returns `None` when it fails.
    fn call(&mut self, op: Op) -> Option<Answer> {
        let result = self.handle.block_on(self.session.call(
            op,
            Consistency::Linearizable,
            &self.options,
        ));
        match result {
            Ok(answer) => Some(answer),
            Err(error) => {
                println!("error: {error}");
                None
            }
        }
    }

    fn follow(&mut self, target: &Target) {
        if let Err(error) = self.handle.block_on(self.follower.follow(target)) {
            println!("warning: no live messages for {target:?}: {error}");
        }
    }

    /// Asks a user name and password until a login succeeds (the first login of a name
    /// registers it with that password).
    fn login(&mut self) -> Option<String> {
        loop {
            let user = self.ask_non_empty("user name> ")?;
            let check = Op::Login {
                user: user.clone(),
                password: "-".into(),
            };
            if let Err(error) = check.validate() {
                println!("not a valid name: {error}");
                continue;
            }
            // On a terminal without echo; from a pipe, the next line.
            let password = match ask_password(&user) {
                Some(password) => password,
                None => self.ask("password> ")?,
            };
            let login = self.session.login(&user, &password, &self.options);
            if let Err(error) = self.handle.block_on(login) {
                println!("error: {error}");
                continue;
            }
            self.follow(&Target::User(user.clone()));
            // Live messages of the channels this user already joined in earlier sessions.
            let mut joined = Vec::new();
            if let Some(Answer {
                reply: Reply::Channels(channels),
                ..
            }) = self.call(Op::ListChannels)
            {
                for channel in channels.iter().filter(|c| c.subscribers.contains(&user)) {
                    self.follow(&Target::Channel(channel.name.clone()));
                    joined.push(format!("#{}", channel.name));
                }
            }
            if joined.is_empty() {
                println!("Logged in as {user}.");
            } else {
                println!("Logged in as {user}; subscribed to {}.", joined.join(", "));
            }
            return Some(user);
        }
    }

    /// One menu action; `false` to quit (or when input ends).
    fn step(&mut self, user: &str) -> bool {
        println!("{MENU}");
        let Some(choice) = self.ask("choice> ") else {
            return false;
        };
        match choice.as_str() {
            "1" => self.list_users(),
            "2" => self.create_channel(),
            "3" => self.list_channels(user),
            "4" => self.subscribe(user),
            "5" => self.publish(user),
            "6" => self.private_message(user),
            "7" => self.history(),
            "0" | "q" | "quit" | "exit" => false,
            "" => true,
            other => {
                println!("Unknown choice {other:?}: type a number from the menu.");
                true
            }
        }
    }

    fn list_users(&mut self) -> bool {
        if let Some(Answer {
            reply: Reply::Users(users),
            ..
        }) = self.call(Op::ListUsers)
        {
            println!("Users ({}): {}", users.len(), users.join(", "));
        }
        true
    }

    fn create_channel(&mut self) -> bool {
        let Some(channel) = self.ask_non_empty("channel name> ") else {
            return false;
        };
        if self
            .call(Op::CreateChannel {
                channel: channel.clone(),
            })
            .is_some()
        {
            println!("Channel #{channel} created.");
        }
        true
    }

    fn list_channels(&mut self, user: &str) -> bool {
        let Some(Answer {
            reply: Reply::Channels(channels),
            ..
        }) = self.call(Op::ListChannels)
        else {
            return true;
        };
        if channels.is_empty() {
            println!("No channels yet.");
        }
        for channel in channels {
            let mark = if channel.subscribers.iter().any(|s| s == user) {
                " (subscribed)"
            } else {
                ""
            };
            println!(
                "#{}{mark}: {} subscriber(s) {}",
                channel.name,
                channel.subscribers.len(),
                channel.subscribers.join(", ")
            );
        }
        true
    }

    fn subscribe(&mut self, user: &str) -> bool {
        let Some(channel) = self.ask_non_empty("channel> ") else {
            return false;
        };
        let channel = channel.trim_start_matches('#').to_owned();
        let op = Op::Subscribe {
            user: user.to_owned(),
            channel: channel.clone(),
        };
        if self.call(op).is_some() {
            self.follow(&Target::Channel(channel.clone()));
            println!("Subscribed to #{channel}.");
        }
        true
    }

    fn publish(&mut self, user: &str) -> bool {
        let Some(channel) = self.ask_non_empty("channel> ") else {
            return false;
        };
        let Some(text) = self.ask_non_empty("message> ") else {
            return false;
        };
        let op = Op::Publish {
            user: user.to_owned(),
            channel: channel.trim_start_matches('#').to_owned(),
            text,
        };
        if let Some(Answer {
            reply: Reply::Posted { id },
            ..
        }) = self.call(op)
        {
            println!("Published as message #{id}.");
        }
        true
    }

    fn private_message(&mut self, user: &str) -> bool {
        let Some(to) = self.ask_non_empty("to user> ") else {
            return false;
        };
        let Some(text) = self.ask_non_empty("message> ") else {
            return false;
        };
        let op = Op::PrivateMessage {
            from: user.to_owned(),
            to: to.trim_start_matches('@').to_owned(),
            text,
        };
        if let Some(Answer {
            reply: Reply::Posted { id },
            ..
        }) = self.call(op)
        {
            println!("Sent as message #{id}.");
        }
        true
    }

    fn history(&mut self) -> bool {
        let Some(target) = self.ask_non_empty("channel or @user> ") else {
            return false;
        };
        let op = Op::History {
            target: parse_target(&target),
            since: 0,
        };
        if let Some(Answer {
            reply: Reply::Messages(messages),
            ..
        }) = self.call(op)
        {
            if messages.is_empty() {
                println!("No messages.");
            }
            for message in messages {
                println!("#{:<5} {}", message.id, format_message(&message));
            }
        }
        true
    }
}

/// Runs the menu on the calling (blocking) thread until the user quits or input ends.
pub fn run(config: &MenuConfig, handle: &Handle) -> Exit {
    let mut editor = match DefaultEditor::new() {
        Ok(editor) => editor,
        Err(error) => {
            eprintln!("error: cannot open the line editor: {error}");
            return Exit::Error;
        }
    };
    let connection = match handle.block_on(Connection::open(&config.endpoints.broker)) {
        Ok(connection) => connection,
        Err(error) => {
            eprintln!("error: {error}");
            return Exit::Error;
        }
    };
    let feed = match handle.block_on(LiveFeed::open(&config.endpoints.proxy)) {
        Ok(feed) => feed,
        Err(error) => {
            eprintln!("error: {error}");
            return Exit::Error;
        }
    };
    let follower = feed.follower();
    let printer = match editor.create_external_printer() {
        Ok(printer) => Printer::Editor(Box::new(printer)),
        // Not a terminal: plain output is just as readable.
        Err(_) => Printer::Stdout,
    };
    println!(
        "paxos-zmq chat — broker {}, live messages from {}",
        config.endpoints.broker, config.endpoints.proxy
    );
    let mut menu = Menu {
        editor,
        session: connection.session(),
        options: config.options,
        handle,
        follower,
    };
    let Some(user) = menu.login() else {
        println!("Bye.");
        return Exit::Ok;
    };
    let mut reader = connection.session();
    reader.use_credential(menu.session.credential().map(str::to_owned));
    let live = handle.spawn(print_live(feed, printer, reader, config.options));
    while menu.step(&user) {}
    live.abort();
    println!("Bye.");
    Exit::Ok
}
