// Main world, right after p2pcamera.js: the filter stays off until the extension's settings
// arrive (without them p2pcamera.js would send the camera to the page's own origin).
(() => {
  const SETTINGS_EVENT = 'p2pcamera-extension:settings';
  const READY_EVENT = 'p2pcamera-extension:ready';
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
  document.dispatchEvent(new CustomEvent(READY_EVENT));
})();
