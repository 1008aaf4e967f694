// Isolated world: hands the stored settings to p2pcamera.js in the page's main world, at start,
// whenever they change, and when the main world asks (it may load after this script). The other
// way, it passes the session's state and latency to the extension's popup while one is open.
(() => {
  const SETTINGS_EVENT = 'p2pcamera-extension:settings';
  const READY_EVENT = 'p2pcamera-extension:ready';
  const STATUS_EVENT = 'p2pcamera-extension:status';
  const POPUP_PORT = 'p2pcamera-popup';
  const STATES = new Set(['idle', 'connecting', 'connected', 'waiting', 'reconnecting', 'fallback', 'stopped']);

  async function send() {
    const { settings } = await chrome.storage.local.get('settings');
    const value = settings ?? { enabled: false };
    document.dispatchEvent(new CustomEvent(SETTINGS_EVENT, { detail: JSON.stringify(value) }));
  }

  document.addEventListener(READY_EVENT, () => { send(); });
  chrome.storage.onChanged.addListener((changes, area) => {
    if (area === 'local' && changes.settings) send();
  });
  send();

  /**
   * The page's status event reduced to what the popup shows: a known state, and numbers or null.
   * Any script of the page can send this event; nothing else of it reaches the extension.
   */
  function readStatus(text) {
    let status;
    try {
      status = JSON.parse(text);
    } catch {
      return null;
    }
    if (!STATES.has(status?.state)) return null;
    const number = (value) => (typeof value === 'number' && Number.isFinite(value) ? value : null);
    return {
      state: status.state,
      round_trip_ms: number(status.round_trip_ms),
      pod_ms: number(status.pod_ms),
      frames: number(status.frames),
    };
  }

  let lastStatus = null;
  const popups = new Set();
  document.addEventListener(STATUS_EVENT, (event) => {
    const status = readStatus(event.detail);
    if (!status) return;
    lastStatus = status;
    for (const port of popups) port.postMessage(status);
  });
  // Only the extension's own pages connect to a content script (chrome.tabs.connect).
  chrome.runtime.onConnect.addListener((port) => {
    if (port.name !== POPUP_PORT) return;
    popups.add(port);
    port.onDisconnect.addListener(() => popups.delete(port));
    port.postMessage(lastStatus);
  });
})();
