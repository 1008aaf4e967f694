// Main world, right after p2pcamera.js: the filter stays off until the extension's settings
// arrive (without them p2pcamera.js would send the camera to the page's own origin). The
// session's state and latency go to bridge.js for the extension's popup.
(() => {
  const SETTINGS_EVENT = 'p2pcamera-extension:settings';
  const READY_EVENT = 'p2pcamera-extension:ready';
  const STATUS_EVENT = 'p2pcamera-extension:status';
  const camera = window.P2PCamera;
  if (!camera) return;
  camera.configure({ enabled: false });

  document.addEventListener(SETTINGS_EVENT, (event) => {
    let settings;
    try {
      settings = JSON.parse(event.detail);
    } catch {
      return;
    }
    const endpoint = typeof settings.endpoint === 'string' ? settings.endpoint : '';
    try {
      camera.configure({
        endpoint: endpoint || location.origin,
        session: settings.session || null,
        token: settings.token || null,
        filter: settings.filter || null,
        enabled: Boolean(endpoint) && settings.enabled !== false,
      });
    } catch (error) {
      console.warn('[p2pcamera] extension settings ignored:', error);
      camera.configure({ enabled: false });
    }
  });

  // Each p2pcamera event, as the state it names (the latency event: the state now) and the
  // latency, in a string (objects do not cross into bridge.js's isolated world). `waiting` (no
  // GPU for the session yet) comes right before its `reconnecting`, which keeps it.
  let waiting = false;
  const publishStatus = (event) => {
    const name = event.type.slice('p2pcamera:'.length);
    const latency = name === 'latency' ? event.detail : camera.latency;
    const state = name === 'latency' ? camera.state : (name === 'reconnecting' && waiting ? 'waiting' : name);
    waiting = name === 'waiting';
    const status = { state, ...latency };
    document.dispatchEvent(new CustomEvent(STATUS_EVENT, { detail: JSON.stringify(status) }));
  };
  for (const name of ['connecting', 'connected', 'fallback', 'waiting', 'reconnecting', 'stopped', 'latency']) {
    window.addEventListener(`p2pcamera:${name}`, publishStatus);
  }
  document.dispatchEvent(new CustomEvent(READY_EVENT));
})();
