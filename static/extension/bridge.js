// Isolated world: hands the stored settings to p2pcamera.js in the page's main world, at start,
// whenever they change, and when the main world asks (it may load after this script).
(() => {
  const SETTINGS_EVENT = 'p2pcamera-extension:settings';
  const READY_EVENT = 'p2pcamera-extension:ready';

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
})();
