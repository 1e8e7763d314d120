//! `FUNCTION FLUSH [ASYNC|SYNC]` and `FUNCTION HELP`: harnesses clear the
//! function libraries between steps. No functions can be loaded here, so the
//! flush has nothing to delete and answers `+OK`; the argument checks and error
//! texts are Redis's. Other subcommands answer "unknown subcommand".

use bytes::BytesMut;

use super::{is, Args, CmdError};
use crate::resp::frame::Reply;
use crate::resp::session::{Flow, Session};

/// `FUNCTION subcommand ...`.
pub enum Function {
    /// `FUNCTION FLUSH [ASYNC|SYNC]`
    Flush,
    /// `FUNCTION HELP`
    Help,
}

impl Function {
    /// The subcommand and its arguments.
    pub fn parse(args: &mut Args) -> Result<Self, CmdError> {
        let sub = args.next_arg()?;
        if is(&sub, "flush") {
            let rest = args.rest();
            match rest.as_slice() {
                [] => Ok(Function::Flush),
                [mode] if is(mode, "async") || is(mode, "sync") => Ok(Function::Flush),
                [_] => Err(CmdError::Reply(
                    "ERR FUNCTION FLUSH only supports SYNC|ASYNC option".into(),
                )),
                _ => Err(CmdError::Reply(format!(
                    "ERR unknown subcommand or wrong number of arguments for '{}'. Try \
                     FUNCTION HELP.",
                    String::from_utf8_lossy(&sub)
                ))),
            }
        } else if is(&sub, "help") {
            args.finish()
                .map_err(|_| CmdError::Arity("function|help".into()))?;
            Ok(Function::Help)
        } else {
            Err(CmdError::UnknownSubcommand {
                command: "FUNCTION",
                sub: String::from_utf8_lossy(&sub).into_owned(),
            })
        }
    }

    /// Answers.
    pub fn apply(self, s: &mut Session, out: &mut BytesMut) -> Flow {
        let mut reply = Reply::new(out, s.proto);
        match self {
            Function::Flush => reply.simple("OK"),
            Function::Help => {
                let lines = [
                    "FUNCTION <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                    "FLUSH [ASYNC|SYNC]",
                    "    Delete all the libraries (there are none: accepted).",
                    "HELP",
                    "    Print this help.",
                ];
                reply.array(lines.len());
                for l in lines {
                    reply.simple(l);
                }
            }
        }
        Flow::Continue
    }
}
