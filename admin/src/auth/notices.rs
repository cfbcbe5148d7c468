//! Security notices: a mail to the account's address whenever its second
//! factor or its password changes, so an owner whose dashboard token or
//! inbox was used by someone else learns of it at once.
//!
//! Notices carry no link and no token (a phished copy grants nothing); they
//! say what changed and what to do if it was not the owner.

use qyzar_shared::ids::Email;

use crate::mail::Mail;
use crate::AppState;

/// What changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// A TOTP enrolment was confirmed: two-factor authentication is on.
    TwoFactorOn,
    /// An active second factor was replaced by a pending enrolment (with the
    /// password and a code or recovery code): off until confirmed.
    TwoFactorReplaced,
    /// Two-factor authentication was turned off.
    TwoFactorOff,
    /// The password was set through a mailed reset link.
    PasswordReset,
}

impl Notice {
    fn kind(self) -> &'static str {
        match self {
            Notice::TwoFactorOn => "notice_2fa_on",
            Notice::TwoFactorReplaced => "notice_2fa_replaced",
            Notice::TwoFactorOff => "notice_2fa_off",
            Notice::PasswordReset => "notice_password_reset",
        }
    }

    fn subject(self) -> &'static str {
        match self {
            Notice::TwoFactorOn => "Two-factor authentication is on for your Qyzar account",
            Notice::TwoFactorReplaced => "Your Qyzar account's authenticator is being replaced",
            Notice::TwoFactorOff => "Two-factor authentication is off for your Qyzar account",
            Notice::PasswordReset => "Your Qyzar password was reset",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Notice::TwoFactorOn => {
                "Two-factor authentication was turned on for your Qyzar account. Every other dashboard session was signed out."
            }
            Notice::TwoFactorReplaced => {
                "A new authenticator is being set up for your Qyzar account. Until it is confirmed, signing in asks for no code."
            }
            Notice::TwoFactorOff => {
                "Two-factor authentication was turned off for your Qyzar account."
            }
            Notice::PasswordReset => {
                "The password of your Qyzar account was reset through the link we mailed. Every dashboard session was signed out; two-factor authentication, if it was on, stays on."
            }
        }
    }

    /// The mail for `to`.
    pub fn mail(self, to: Email) -> Mail {
        Mail {
            kind: self.kind(),
            subject: self.subject(),
            text: format!(
                "{}\n\nIf it was you, no action is needed.\n\nIf it was not you, someone else can use your account: reset your password now, then sign out every session and check your two-factor settings.\n",
                self.what()
            ),
            to,
        }
    }
}

/// Sends `notice` to `email` in the background (a failure is logged, never
/// the body; an address that no longer parses is skipped with a warning).
pub fn send(state: &AppState, email: &str, notice: Notice) {
    match Email::parse(email) {
        Ok(to) => state.mailer.send_in_background(notice.mail(to)),
        Err(_) => tracing::warn!(
            kind = notice.kind(),
            "notice not sent: stored address does not parse"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_notice_has_its_own_kind_and_says_what_to_do() {
        let all = [
            Notice::TwoFactorOn,
            Notice::TwoFactorReplaced,
            Notice::TwoFactorOff,
            Notice::PasswordReset,
        ];
        let mut kinds: Vec<_> = all.iter().map(|n| n.kind()).collect();
        kinds.dedup();
        assert_eq!(kinds.len(), all.len());
        for n in all {
            let m = n.mail(Email::parse("ann@example.com").unwrap());
            assert!(m.text.contains("If it was not you"), "{n:?}");
            assert!(!m.text.contains("token="), "notices carry no link");
        }
    }
}
