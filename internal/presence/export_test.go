package presence

// MemoryRooms tells tests how many rooms m holds.
func MemoryRooms(m *Memory) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.rooms)
}
