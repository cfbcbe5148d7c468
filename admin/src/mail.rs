//! Outgoing mail: account verification, password reset, "you already have an
//! account" notices.
//!
//! Two transports behind one [`Mailer`]:
//! - **SMTP** through lettre when `QYZAR_SMTP_URL` is set. The URL follows
//!   lettre's connection-URL format: `smtp://host:port` is plain SMTP (only
//!   for a relay on loopback or a trusted network), `smtp://user:pass@host:587?tls=required`
//!   is STARTTLS, `smtps://user:pass@host:465` is implicit TLS. TLS is rustls
//!   with the `ring` provider and the Mozilla roots (`webpki-roots`), so no
//!   system OpenSSL is needed.
//! - **Outbox**: otherwise each message is written as one `.eml` file into
//!   `QYZAR_OUTBOX_DIR`, so the embedded default (`qyzar dev`) works without a
//!   mail server and a developer can open the links by hand.
//!
//! Mail carries single-use tokens: a [`Mail`] never shows its text in `Debug`
//! and nothing here logs a body or a link.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use lettre::message::header::{ContentTransferEncoding, ContentType};
use lettre::message::{Body, Mailbox};
use lettre::{AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor};
use qyzar_shared::ids::Email;

use crate::config::AdminConfig;

/// How long one SMTP exchange may take before the send is given up (and
/// logged); lettre's own default of a minute would pin tasks on a dead relay.
const SMTP_TIMEOUT: Duration = Duration::from_secs(15);

/// Why a mail could not be built or sent.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// `QYZAR_MAIL_FROM` or a recipient is not a valid mailbox.
    #[error("invalid mailbox: {0}")]
    Address(#[from] lettre::address::AddressError),
    /// `QYZAR_SMTP_URL` does not parse, or the SMTP exchange failed.
    #[error("smtp: {0}")]
    Smtp(#[from] lettre::transport::smtp::Error),
    /// The message could not be assembled.
    #[error("message: {0}")]
    Build(#[from] lettre::error::Error),
    /// The outbox folder could not be written.
    #[error("outbox: {0}")]
    Io(#[from] std::io::Error),
}

/// One message to one recipient.
pub struct Mail {
    /// What kind of mail this is, for logs (`verify_email`, `password_reset`, …).
    pub kind: &'static str,
    /// The recipient.
    pub to: Email,
    /// The subject line.
    pub subject: &'static str,
    /// The plain-text body; holds links with tokens, so never logged.
    pub text: String,
}

impl fmt::Debug for Mail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mail")
            .field("kind", &self.kind)
            .field("to", &self.to)
            .finish_non_exhaustive()
    }
}

enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Outbox(PathBuf),
}

/// Sends mail over SMTP or into the outbox folder (see the module docs).
pub struct Mailer {
    from: Mailbox,
    public_url: String,
    transport: Transport,
}

impl fmt::Debug for Mailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let transport = match &self.transport {
            Transport::Smtp(_) => "smtp".to_owned(),
            Transport::Outbox(dir) => format!("outbox {}", dir.display()),
        };
        f.debug_struct("Mailer")
            .field("from", &self.from.to_string())
            .field("transport", &transport)
            .finish()
    }
}

impl Mailer {
    /// The mailer the configuration asks for. Connects to nothing yet: an
    /// SMTP relay that is down shows up as logged send failures, not as an
    /// admin that refuses to start.
    pub fn from_config(config: &AdminConfig) -> Result<Self, MailError> {
        let from: Mailbox = config.mail_from.parse()?;
        let transport = match &config.smtp_url {
            Some(url) => Transport::Smtp(
                AsyncSmtpTransport::<Tokio1Executor>::from_url(url)?
                    .timeout(Some(SMTP_TIMEOUT))
                    .build(),
            ),
            None => Transport::Outbox(config.outbox_dir.clone()),
        };
        Ok(Self {
            from,
            public_url: config.public_url.trim_end_matches('/').to_owned(),
            transport,
        })
    }

    /// The base URL links in mail point to (no trailing slash).
    pub fn public_url(&self) -> &str {
        &self.public_url
    }

    /// Sends one mail now.
    pub async fn send(&self, mail: &Mail) -> Result<(), MailError> {
        let to = Mailbox::new(None, mail.to.as_str().parse()?);
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(mail.subject)
            .message_id(None)
            .header(ContentType::TEXT_PLAIN)
            .body(plain_body(&mail.text))?;
        match &self.transport {
            Transport::Smtp(smtp) => {
                smtp.send(message).await?;
            }
            Transport::Outbox(dir) => write_eml(dir, &message.formatted()).await?,
        }
        Ok(())
    }

    /// Sends in a spawned task and logs a failure (kind and cause, never the
    /// body). Routes answer without waiting, so an answer's timing does not
    /// tell whether a mail went out (which would reveal whether an email
    /// address has an account) and a slow relay does not slow the API.
    pub fn send_in_background(self: &Arc<Self>, mail: Mail) {
        let mailer = Arc::clone(self);
        tokio::spawn(async move {
            if let Err(e) = mailer.send(&mail).await {
                tracing::warn!(kind = mail.kind, error = %e, "mail not sent");
            }
        });
    }

    /// "Confirm your address": links to `{public_url}/ui/verify-email?token=…`.
    pub fn verification(&self, to: Email, token: &str) -> Mail {
        Mail {
            kind: "verify_email",
            subject: "Verify your Qyzar email address",
            text: format!(
                "Welcome to Qyzar.\n\nConfirm that this address is yours by opening this link within 24 hours:\n\n{}/ui/verify-email?token={token}\n\nIf you did not create a Qyzar account, ignore this mail.\n",
                self.public_url
            ),
            to,
        }
    }

    /// "Reset your password": links to `{public_url}/ui/reset-password?token=…`.
    pub fn password_reset(&self, to: Email, token: &str) -> Mail {
        Mail {
            kind: "password_reset",
            subject: "Reset your Qyzar password",
            text: format!(
                "Someone asked to reset the password of the Qyzar account for this address.\n\nTo choose a new password, open this link within one hour:\n\n{}/ui/reset-password?token={token}\n\nIf it was not you, ignore this mail: your password stays as it is.\n",
                self.public_url
            ),
            to,
        }
    }

    /// Sent instead of a verification mail when someone registers an address
    /// that already has an account: the API answers exactly as for a new
    /// account (so it does not reveal membership), and only the owner of the
    /// inbox learns that the account exists.
    pub fn already_registered(&self, to: Email) -> Mail {
        Mail {
            kind: "already_registered",
            subject: "You already have a Qyzar account",
            text: format!(
                "Someone, perhaps you, tried to create a Qyzar account with this address, which already has one.\n\nSign in at {0}/ui/signin, or reset your password at {0}/ui/reset-password if you forgot it.\n\nIf it was not you, no action is needed: nothing was changed.\n",
                self.public_url
            ),
            to,
        }
    }
}

/// The body as 7bit text when it can be: ASCII, no NUL or CR, lines within
/// RFC 5322's 998-character limit. lettre would pick quoted-printable for any
/// line past 76 characters, folding our links with `=` soft breaks and
/// `=3D`, so that a link copied from a raw `.eml` in the outbox would not
/// work. Anything else gets lettre's own choice of encoding.
fn plain_body(text: &str) -> Body {
    let seven_bit =
        text.is_ascii() && !text.contains(['\0', '\r']) && text.lines().all(|l| l.len() <= 998);
    if seven_bit {
        Body::dangerous_pre_encoded(
            text.replace('\n', "\r\n").into_bytes(),
            ContentTransferEncoding::SevenBit,
        )
    } else {
        Body::new(text.to_owned())
    }
}

/// Writes one message into the outbox as `<unix-ms>-<random>.eml`, through a
/// temporary name and a rename so a reader never sees half a file.
async fn write_eml(dir: &std::path::Path, raw: &[u8]) -> std::io::Result<()> {
    tokio::fs::create_dir_all(dir).await?;
    let name = format!(
        "{}-{}",
        qyzar_shared::time::now_ms(),
        qyzar_shared::crypto::random_token("", 6)
    );
    let tmp = dir.join(format!(".{name}.tmp"));
    tokio::fs::write(&tmp, raw).await?;
    tokio::fs::rename(&tmp, dir.join(format!("{name}.eml"))).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn outbox_mail_keeps_links_whole_and_debug_hides_them() {
        let dir = tempfile::tempdir().unwrap();
        let config = AdminConfig::local(dir.path(), String::new());
        let mailer = Mailer::from_config(&config).unwrap();
        let mail = mailer.verification(Email::parse("ann@example.com").unwrap(), "qz_ev_SECRET");
        assert!(!format!("{mail:?} {mailer:?}").contains("qz_ev_SECRET"));
        mailer.send(&mail).await.unwrap();
        let files: Vec<_> = std::fs::read_dir(dir.path().join("outbox"))
            .unwrap()
            .flatten()
            .collect();
        assert_eq!(files.len(), 1);
        assert!(files[0].file_name().to_string_lossy().ends_with(".eml"));
        let raw = std::fs::read_to_string(files[0].path()).unwrap();
        assert!(raw.contains("\r\nTo: ann@example.com\r\n"), "{raw}");
        assert!(raw.contains("Content-Transfer-Encoding: 7bit"), "{raw}");
        assert!(
            raw.contains("\r\nhttp://127.0.0.1/ui/verify-email?token=qz_ev_SECRET\r\n"),
            "links stay whole: {raw}"
        );
    }

    #[test]
    fn a_bad_smtp_url_or_sender_is_refused_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = AdminConfig::local(dir.path(), String::new());
        config.smtp_url = Some("ftp://mail.example.com".into());
        assert!(Mailer::from_config(&config).is_err());
        config.smtp_url = Some("smtps://user:pass@mail.example.com:465".into());
        assert!(
            Mailer::from_config(&config).is_ok(),
            "implicit TLS is available"
        );
        config.mail_from = "not a mailbox".into();
        assert!(Mailer::from_config(&config).is_err());
    }
}
