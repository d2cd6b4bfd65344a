/* Tabs of the op pages: each button shows its framework's pane and hides the others, within its
   own tab container. Buttons call openOpTab(event, paneId) from their onclick attribute. */
function openOpTab(event, paneId) {
  var button = event.currentTarget;
  var container = button.closest(".op-tabs-container");
  if (!container) {
    return;
  }
  container.querySelectorAll(".op-tab-pane").forEach(function (pane) {
    pane.classList.toggle("active", pane.id === paneId);
  });
  container.querySelectorAll(".op-tab-btn").forEach(function (other) {
    other.classList.toggle("active", other === button);
  });
}
