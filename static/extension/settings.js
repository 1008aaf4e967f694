// The extension's settings, kept in chrome.storage.local under `settings`.

export const DEFAULTS = Object.freeze({
  endpoint: '',
  session: '',
  token: '',
  filter: '',
  enabled: true,
  sites: [],
});

/** Settings with every field present and of the right type. */
export function normalize(stored = {}) {
  const text = (value) => (typeof value === 'string' ? value.trim() : '');
  return {
    endpoint: text(stored.endpoint).replace(/\/+$/, ''),
    session: text(stored.session),
    token: text(stored.token),
    filter: text(stored.filter),
    enabled: stored.enabled !== false,
    sites: Array.isArray(stored.sites) ? stored.sites.filter((s) => typeof s === 'string') : [],
  };
}

/** The content-script match pattern of a site origin such as `https://stream.example.com`, or null. */
export function siteMatch(site) {
  let url;
  try {
    url = new URL(site.trim());
  } catch {
    return null;
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') return null;
  return `${url.protocol}//${url.hostname}/*`;
}

/** Why the settings cannot be used, or null. */
export function problem(settings) {
  if (!settings.endpoint) return 'Router URL is required.';
  try {
    const url = new URL(settings.endpoint);
    if (url.protocol !== 'https:' && url.hostname !== 'localhost' && url.hostname !== '127.0.0.1') {
      return 'Router URL must use https://.';
    }
  } catch {
    return 'Router URL is not a URL.';
  }
  if (settings.session && !/^[a-z0-9-]+\/[a-z0-9.-]+$/.test(settings.session)) {
    return 'Session must be namespace/name.';
  }
  const bad = settings.sites.find((site) => !siteMatch(site));
  if (bad) return `Not a site address: ${bad}`;
  return null;
}
