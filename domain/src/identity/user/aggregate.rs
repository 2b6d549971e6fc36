//! The User aggregate as cqrs-es runs it: commands decided by `decide.rs`,
//! events applied to the state.

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;

use super::*;

impl Aggregate for User {
    const TYPE: &'static str = "User";
    type Command = UserCommand;
    type Event = UserEvent;
    type Error = UserError;
    type Services = ();

    async fn handle(
        &mut self,
        command: UserCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: UserEvent) {
        use UserEvent as E;
        match event {
            E::UserRegistered {
                user_id,
                email,
                display_name,
                role,
                password_hash,
            } => {
                self.id = Some(user_id);
                self.email = email;
                self.display_name = display_name;
                self.role = Some(role);
                self.password_hash = password_hash;
            }
            E::ProfileUpdated { display_name } => self.display_name = display_name,
            E::LoginSucceeded { .. } => {
                self.failures.clear();
                self.locked_until = None;
                self.lock_count = 0;
            }
            E::LoginFailed { reason, at } => {
                if reason == "bad_password" {
                    self.failures.retain(|t| at - *t < FAILURE_WINDOW);
                    self.failures.push(at);
                }
            }
            E::AccountLocked {
                until, lock_count, ..
            } => {
                self.locked_until = Some(until);
                self.lock_count = lock_count;
                self.failures.clear();
            }
            E::SessionStarted {
                session_id,
                refresh_token_hash,
                fingerprint_hash,
                started_at,
                expires_at,
                ..
            } => self.sessions.push(Session {
                id: session_id,
                refresh_hash: refresh_token_hash,
                generation: 0,
                used_hashes: Vec::new(),
                fingerprint_hash,
                started_at,
                expires_at,
            }),
            E::SessionRefreshed {
                session_id,
                generation,
                refresh_token_hash,
                ..
            } => {
                if let Some(s) = self.sessions.iter_mut().find(|s| s.id == session_id) {
                    let old = std::mem::replace(&mut s.refresh_hash, refresh_token_hash);
                    s.used_hashes.push(old);
                    s.generation = generation;
                }
            }
            E::RefreshTokenReused { .. } => {}
            E::SessionRevoked { session_id, .. } => self.sessions.retain(|s| s.id != session_id),
            E::PasswordChanged { password_hash, .. } => {
                self.password_hash = password_hash;
                self.must_change_password = false;
                self.reset = None;
                self.failures.clear();
                self.locked_until = None;
                self.lock_count = 0;
            }
            E::PasswordResetRequested {
                token_hash,
                expires_at,
            } => self.reset = Some((token_hash, expires_at)),
            E::PasswordResetForced {} => self.must_change_password = true,
            E::RoleChanged { to, .. } => self.role = Some(to),
            E::UserDeactivated {} => self.status = Status::Deactivated,
            E::DeviceRegistered {
                device_id,
                name,
                platform,
            } => self.devices.push(Device {
                device_id,
                name,
                platform,
                active: false,
            }),
            E::ActiveDeviceTransferred { to, .. } => {
                for d in &mut self.devices {
                    d.active = d.device_id == to;
                }
            }
            E::DeviceRevoked { device_id } => self.devices.retain(|d| d.device_id != device_id),
        }
    }
}
