// Tokens, for a server started with --auth-secret-file or --auth-public-key.
//
// - The token comes from the page's URL (`/?token=…`: stored, then removed from the address bar
//   so it does not end up in bookmarks or screenshots) or from the token form, and is kept in
//   sessionStorage: for this tab's life, not for every later visit.
// - REST requests carry it as `Authorization: Bearer`; the WebSocket URL as `?token=` (a browser
//   cannot set headers on a WebSocket).
// - A server without tokens never asks: nothing here changes what the page sends then.

const KEY = 'tickerfeed.token';

function fromUrl() {
  const url = new URL(location.href);
  const given = url.searchParams.get('token');
  if (given === null) return null;
  url.searchParams.delete('token');
  history.replaceState(null, '', url.pathname + url.search + url.hash);
  return given.trim();
}

const given = fromUrl();
if (given) save(given);

/** The token in use, or null. */
export function token() {
  try { return sessionStorage.getItem(KEY); } catch { return given || null; }
}

function save(value) {
  try { sessionStorage.setItem(KEY, value); } catch { /* private mode: the URL's token is used */ }
}

/** `url` (absolute, or a path) with the token as its `token` query parameter. */
export function withToken(url) {
  const t = token();
  if (!t) return url;
  const u = new URL(url, location.href);
  u.searchParams.set('token', t);
  return u.toString();
}

/** fetch() with the token as `Authorization: Bearer`. */
export function authFetch(path, init = {}) {
  const t = token();
  if (!t) return fetch(path, init);
  return fetch(path, { ...init, headers: { ...(init.headers ?? {}), authorization: `Bearer ${t}` } });
}

/** Shows the token form with `reason`; a token entered there is kept and the page reloaded. */
export function askForToken(reason) {
  const dialog = document.getElementById('token-dialog');
  document.getElementById('token-reason').textContent = reason;
  const form = document.getElementById('token-form');
  form.onsubmit = (e) => {
    e.preventDefault();
    const value = document.getElementById('token-input').value.trim();
    if (!value) return;
    save(value);
    location.reload();
  };
  if (!dialog.open) dialog.showModal();
  document.getElementById('token-input').focus();
}
